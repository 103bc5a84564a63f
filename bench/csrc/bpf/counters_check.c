/* Standalone check of fb_trace.bpf.o's per-thread counters against the thread's own
 * CLOCK_THREAD_CPUTIME_ID and schedstat run delay (4 threads on 2 CPUs, spinning or
 * sleeping, 0.4 s). Built by hand until the loader is in the core:
 *   clang -O2 -g -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I. -c fb_trace.bpf.c -o /tmp/fb_trace.bpf.o
 *   gcc -O2 -I. counters_check.c fb_bpf_loader.c -lbpf -lpthread -o /tmp/cc && /tmp/cc /tmp/fb_trace.bpf.o */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/types.h>
#include "fb_trace_shared.h"
#include "fb_bpf_loader.h"
struct res { int tid; uint64_t cpu_ns, run_delay, slices; int kind; };
/* The workers, done, sleep until `go`: main reads each one's clocks and schedstat and the
 * map's counters while none can run, so both sides end at the same switch-out (read by
 * the thread itself, a wait after its own read but before BPF's last entry made the
 * counters differ by that wait: 4% once). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done_n, go;
static uint64_t now(clockid_t c){struct timespec t;clock_gettime(c,&t);return t.tv_sec*1000000000ULL+t.tv_nsec;}
static void *work(void *a){
  struct res *r=a; r->tid=syscall(SYS_gettid);
  uint64_t end=now(CLOCK_MONOTONIC)+400000000ULL;
  while(now(CLOCK_MONOTONIC)<end){ if(r->kind){ volatile int x=0; for(int i=0;i<200000;i++) x+=i; struct timespec s={0,200000}; nanosleep(&s,0);} }
  pthread_mutex_lock(&mu); done_n++; pthread_cond_broadcast(&cv);
  while(!go) pthread_cond_wait(&cv,&mu);
  pthread_mutex_unlock(&mu); return 0;}
static void read_sleeping(struct res *r, pthread_t t){
  clockid_t c; pthread_getcpuclockid(t,&c); r->cpu_ns=now(c);
  char path[64]; snprintf(path,sizeof path,"/proc/self/task/%d/schedstat",r->tid);
  FILE*f=fopen(path,"r"); unsigned long long q=0,b=0,n=0; if(f){ if(fscanf(f,"%llu %llu %llu",&q,&b,&n)!=3) b=n=0; fclose(f);}
  r->run_delay=b; r->slices=n;}
int main(int argc,char**argv){
  char err[256];
  struct fb_bpf *b=fb_bpf_open(argv[1],getpid(),0,1<<20,1,err,sizeof err);
  if(!b){printf("open: %s\n",err);return 1;}
  enum{N=4}; pthread_t t[N]; struct res r[N]={0};
  for(int i=0;i<N;i++){r[i].kind=i%2; pthread_create(&t[i],0,work,&r[i]);}
  pthread_mutex_lock(&mu); while(done_n<N) pthread_cond_wait(&cv,&mu); pthread_mutex_unlock(&mu);
  struct timespec settle={0,50000000}; nanosleep(&settle,0);   /* every worker asleep in the wait */
  for(int i=0;i<N;i++) read_sleeping(&r[i],t[i]);
  struct fb_bpf_totals tt; fb_bpf_totals(b,&tt);
  static struct fb_bpf_thread th[FB_BPF_MAX_THREADS];   /* the counters as they were then */
  const struct fb_bpf_thread *live=fb_bpf_threads(b);
  for(unsigned s=0;s<tt.slots_used && s<FB_BPF_MAX_THREADS;s++) th[s]=live[s];
  pthread_mutex_lock(&mu); go=1; pthread_cond_broadcast(&cv); pthread_mutex_unlock(&mu);
  for(int i=0;i<N;i++) pthread_join(t[i],0);
  fb_bpf_stop(b);
  printf("slots %u log_used %llu dropped %llu\n",tt.slots_used,(unsigned long long)tt.log_used,(unsigned long long)tt.log_dropped);
  for(int i=0;i<N;i++) for(unsigned s=0;s<tt.slots_used;s++) if(th[s].tid==(unsigned)r[i].tid)
    printf("tid %d kind %d: cpu %llu vs bpf on %llu (%.4f) | delay %llu vs bpf wait %llu (%.4f) | slices %llu vs switches_in %llu, migr %llu exec %.4f kdelay %.4f\n",
      r[i].tid,r[i].kind,(unsigned long long)r[i].cpu_ns,(unsigned long long)th[s].on_ns,(double)th[s].on_ns/r[i].cpu_ns,
      (unsigned long long)r[i].run_delay,(unsigned long long)th[s].wait_ns,(double)th[s].wait_ns/(r[i].run_delay?r[i].run_delay:1),
      (unsigned long long)r[i].slices,(unsigned long long)th[s].switches_in,(unsigned long long)th[s].migrations,(double)th[s].exec_ns/r[i].cpu_ns,(double)th[s].kdelay_ns/(r[i].run_delay?r[i].run_delay:1));
  struct fb_bpf_lock_key k[64]; struct fb_bpf_lock_val v[64]; int nl=fb_bpf_locks(b,k,v,64); printf("lock entries %d\n",nl);
  struct fb_bpf_mm mm; fb_bpf_mm(b,0,&mm); printf("mmap read acq %llu\n",(unsigned long long)mm.acquisitions);
  fb_bpf_close(b); return 0;}
