"""cffi API-mode build of the C core; run by `pip install .` (setup.py's cffi_modules)."""
import glob
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
# the core, then every mechanism file: adding mech_<name>.c needs no edit here
SOURCES = ["core.c", "vm.c", "resolve.c", "collect.c", "uffd_common.c", "ring.c", "calib.c"] + sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(CSRC, "mech_*.c")))

ffibuilder = FFI()
CDEF_HEADERS = ["fb_api.h", "fb_ring_api.h", "fb_calib_api.h"]
cdef_text = ""
for name in CDEF_HEADERS:
    with open(os.path.join(CSRC, name)) as f:
        cdef_text += f.read() + "\n"
ffibuilder.cdef(cdef_text)
ffibuilder.set_source(
    "bench._native",
    '#include "fb_core.h"\n#ifndef FB_RING_VERSION\n#include "fb_ring_api.h"\n#endif\n#include "fb_calib_api.h"',
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(CSRC)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
    libraries=["pthread", "m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
