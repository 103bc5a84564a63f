/* Standalone: attach fb_trace.bpf.o to a running process (its tgid), and on SIGINT print
 * every lock-contention entry (lock, flags, name kind, count, wait, max, slab name, stack
 * IPs) and the totals. Used to compare the BPF path with `perf lock record -p PID` on the
 * same process over the same time (issue 16's progress note has the method):
 *   gcc -O2 -I. attach_check.c fb_bpf_loader.c -lbpf -o /tmp/fb_attach */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <unistd.h>
#include <linux/types.h>
#include "fb_trace_shared.h"
#include "fb_bpf_loader.h"
static volatile int stop;
static void h(int s){(void)s;stop=1;}
int main(int argc,char**argv){
  char err[256]; signal(SIGINT,h); signal(SIGTERM,h);
  struct fb_bpf *b=fb_bpf_open(argv[1],atoi(argv[2]),0,1<<22,1,err,sizeof err);
  if(!b){fprintf(stderr,"open: %s\n",err);return 1;}
  fprintf(stderr,"attached\n");
  while(!stop) pause();
  fb_bpf_stop(b);
  static struct fb_bpf_lock_key k[16384]; static struct fb_bpf_lock_val v[16384];
  int n=fb_bpf_locks(b,k,v,16384);
  for(int i=0;i<n;i++){ uint64_t ips[FB_BPF_STACK_DEPTH]={0}; char name[32]={0};
    if(k[i].stackid>=0) fb_bpf_stack(b,k[i].stackid,ips); fb_bpf_lock_name(b,k[i].lock,name);
    printf("L %llx %u %u %llu %llu %llu %s", (unsigned long long)k[i].lock,k[i].flags,k[i].name_kind,
      (unsigned long long)v[i].count,(unsigned long long)v[i].wait_ns,(unsigned long long)v[i].max_ns,name[0]?name:"-");
    for(int j=0;j<FB_BPF_STACK_DEPTH&&ips[j];j++) printf(" %llx",(unsigned long long)ips[j]); printf("\n"); }
  struct fb_bpf_totals t; fb_bpf_totals(b,&t);
  printf("T slots %u log %llu dropped %llu locks_dropped %llu\n",t.slots_used,(unsigned long long)t.log_used,(unsigned long long)t.log_dropped,(unsigned long long)t.locks_dropped);
  fb_bpf_close(b); return 0;}
