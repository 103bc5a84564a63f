"""cffi API-mode build of the C core; run by `pip install .` (setup.py's cffi_modules).

The in-kernel tracer (csrc/bpf) is part of the same build: its BPF object is compiled
with clang to bench/fb_trace.bpf.o and its libbpf loader is linked into the core. Both
come from Debian (clang, libbpf-dev); as root the build installs them when missing.
Without them the core is built with csrc/bpf/fb_bpf_absent.c, which says why, and runs
fall back to the tracefs text path with that reason in every record."""
import glob
import os
import shutil
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
BPF_DIR = os.path.join(CSRC, "bpf")
BPF_OBJECT = os.path.join(HERE, "fb_trace.bpf.o")
BPF_PACKAGES = ("clang", "libbpf-dev")
# the core, then every mechanism file: adding mech_<name>.c needs no edit here
SOURCES = ["core.c", "vm.c", "resolve.c", "collect.c", "uffd_common.c", "ring.c", "calib.c"] + sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(CSRC, "mech_*.c")))


def _have_bpf_tools() -> bool:
    return bool(shutil.which("clang")) and os.path.exists("/usr/include/bpf/libbpf.h")


def _install_bpf_tools() -> str | None:
    """Debian's clang and libbpf-dev, as root; None when they are there, else why not."""
    if _have_bpf_tools():
        return None
    if os.environ.get("FAULTBENCH_NO_BPF"):
        return "FAULTBENCH_NO_BPF is set"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "clang and libbpf-dev (Debian) are missing and the build is not root with apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq",
                 "--no-install-recommends", *BPF_PACKAGES]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode and cmd[1] != "update":
            return f"apt-get install {' '.join(BPF_PACKAGES)} failed: {r.stderr.strip()[-200:]}"
    return None if _have_bpf_tools() else "clang or libbpf-dev still missing after apt-get install"


def _build_bpf_object() -> str | None:
    """Compile the tracer's object; None on success, else why not."""
    why = _install_bpf_tools()
    if why:
        return why
    multiarch = getattr(sys.implementation, "_multiarch", "x86_64-linux-gnu")
    # -mcpu=v3: the fetch-and-add whose result is used (the log's slot) needs it
    cmd = ["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", f"-I/usr/include/{multiarch}",
           "-I", BPF_DIR, "-c", os.path.join(BPF_DIR, "fb_trace.bpf.c"), "-o", BPF_OBJECT]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return f"clang could not build fb_trace.bpf.c: {r.stderr.strip()[-300:]}"
    return None


BPF_MISSING = _build_bpf_object()
if BPF_MISSING is None:
    bpf_sources, bpf_libs, bpf_macros = ["bpf/fb_bpf_loader.c"], ["bpf"], []
else:
    print(f"faultbench: building without the in-kernel tracer: {BPF_MISSING}", file=sys.stderr)
    bpf_sources, bpf_libs = ["bpf/fb_bpf_absent.c"], []
    bpf_macros = [("FB_BPF_MISSING", '"' + BPF_MISSING.replace('"', "'").replace("\\", "/")
                   .replace("\n", " ") + '"')]

ffibuilder = FFI()
CDEF_HEADERS = ["fb_api.h", "fb_ring_api.h", "fb_calib_api.h", "bpf/fb_bpf_loader.h"]
cdef_text = ""
for name in CDEF_HEADERS:
    with open(os.path.join(CSRC, name)) as f:
        # cffi's cdef takes no include guards or #include lines
        cdef_text += "\n".join(line for line in f.read().splitlines()
                               if not line.startswith(("#ifndef FB_BPF", "#define FB_BPF_LOADER",
                                                       "#endif", "#include"))
                               or not name.startswith("bpf/")) + "\n"
# the tracer's sizes, from its shared header (cffi reads each value from the C side)
cdef_text += "".join(f"#define FB_BPF_{n} ...\n" for n in ("MAX_THREADS", "MAX_STACKS", "STACK_DEPTH",
                                                             "MAX_LOCKS"))
ffibuilder.cdef(cdef_text)
ffibuilder.set_source(
    "bench._native",
    '#include "fb_core.h"\n#ifndef FB_RING_VERSION\n#include "fb_ring_api.h"\n#endif\n#include "fb_calib_api.h"\n'
    '#include <linux/types.h>\n#include "bpf/fb_trace_shared.h"\n#include "bpf/fb_bpf_loader.h"',
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES + bpf_sources],
    include_dirs=[os.path.relpath(CSRC)],
    define_macros=bpf_macros,
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
    libraries=["pthread", "m"] + bpf_libs,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
