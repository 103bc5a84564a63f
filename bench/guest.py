"""Generates the guest's x86-64 code.

The guest runs in 64-bit mode at CPL 3 (the only mode that runs natively on a
PVM host: see PLATFORM.md). Each vCPU walks its touch table: every entry is a
page offset with flags (FB_TOUCH_READ, FB_TOUCH_FIRST). For each entry it
touches the page (write or read at offset 64, so the fault is delivered), then
checks the page's first 16 bytes against the expected content: the page's own
guest-physical address and the run seed (with verify_full, all the other words too,
but offset 64: a pattern of the address, seed and offset, so a torn copy shows). With timing on, rdtsc before and after
the touch go to the vCPU's timing buffer. At the end, `out 0x10` tells the host.
With timing on, the guest first reports one rdtsc through `out 0x11`.

Registers set by the host: rsi = touch table, rcx = entries, rdi = timing
buffer, r8 = expected seed, r9 = address mask (0 for zero-filled memory),
r10 = the full pattern's step (0 for zero-filled memory), r13 = the value
written. r11, r14, r15, rbp: scratch of the full check. r12 counts pages whose content was wrong. rbx holds
the touched page's address at every faulting instruction: the exits mechanism
reads it from the synced registers.
"""

DONE_PORT = 0x10
TSC_PORT = 0x11   # one rdtsc at start: lets the host check the guest shares its TSC
FAULT_ADDRESS_REGISTER = "rbx"


class Asm:
    """Just enough of an assembler: raw bytes plus labelled rel8/rel32 jumps."""

    def __init__(self):
        self.code = bytearray()
        self.labels = {}
        self.fixups = []  # (position of displacement, size, label)

    def emit(self, *chunks):
        for c in chunks:
            self.code += bytes(c)

    def label(self, name):
        self.labels[name] = len(self.code)

    def jump(self, opcode, label, size):
        self.code += bytes(opcode)
        self.fixups.append((len(self.code), size, label))
        self.code += bytes(size)

    def assemble(self):
        for pos, size, label in self.fixups:
            rel = self.labels[label] - (pos + size)
            lo, hi = (-128, 127) if size == 1 else (-(1 << 31), (1 << 31) - 1)
            if not lo <= rel <= hi:
                raise ValueError(f"jump to {label} out of range for rel{size * 8}")
            self.code[pos:pos + size] = rel.to_bytes(size, "little", signed=True)
        return bytes(self.code)


RDTSC_TO_RAX = [
    (0x0F, 0x31),              # rdtsc
    (0x48, 0xC1, 0xE2, 0x20),  # shl rdx, 32
    (0x48, 0x09, 0xD0),        # or rax, rdx
]


def _full_check(a: Asm) -> None:
    """--verify full: every 8-byte word of the page from offset 16 on, but offset 64
    (the guest's own write), must equal ((rbx & r9) ^ r8) ^ (offset * r10). Entered
    with rax = the header mismatch; leaves rax = header | pattern mismatch."""
    a.emit((0x48, 0x89, 0xC5))                    # mov rbp, rax          (mismatch so far)
    a.emit((0x48, 0x89, 0xD8))                    # mov rax, rbx
    a.emit((0x4C, 0x21, 0xC8))                    # and rax, r9
    a.emit((0x4C, 0x31, 0xC0))                    # xor rax, r8           (page base value)
    a.emit((0x4C, 0x8D, 0x73, 0x10))              # lea r14, [rbx+16]
    a.emit((0x4D, 0x89, 0xD3))                    # mov r11, r10
    a.emit((0x49, 0xC1, 0xE3, 0x04))              # shl r11, 4            (16 * step)
    a.emit((0x4D, 0x89, 0xD7))                    # mov r15, r10
    a.emit((0x49, 0xC1, 0xE7, 0x03))              # shl r15, 3            (8 * step)
    a.label("word")
    a.emit((0x44, 0x89, 0xF2))                    # mov edx, r14d
    a.emit((0x81, 0xE2, 0xFF, 0x0F, 0x00, 0x00))  # and edx, 0xfff
    a.emit((0x83, 0xFA, 0x40))                    # cmp edx, 64
    a.jump((0x74,), "next_word", 1)               # je next_word
    a.emit((0x49, 0x8B, 0x16))                    # mov rdx, [r14]
    a.emit((0x48, 0x31, 0xC2))                    # xor rdx, rax
    a.emit((0x4C, 0x31, 0xDA))                    # xor rdx, r11
    a.emit((0x48, 0x09, 0xD5))                    # or rbp, rdx
    a.label("next_word")
    a.emit((0x4D, 0x01, 0xFB))                    # add r11, r15
    a.emit((0x49, 0x83, 0xC6, 0x08))              # add r14, 8
    a.emit((0x44, 0x89, 0xF2))                    # mov edx, r14d
    a.emit((0xF7, 0xC2, 0xFF, 0x0F, 0x00, 0x00))  # test edx, 0xfff
    a.jump((0x75,), "word", 1)                    # jnz word              (until the page ends)
    a.emit((0x48, 0x89, 0xE8))                    # mov rax, rbp
    a.emit((0x48, 0x85, 0xC0))                    # test rax, rax


def touch_loop(record_latency: bool = True, verify_full: bool = False) -> bytes:
    a = Asm()
    if record_latency:
        # the host brackets this exit with its own rdtsc: the per-fault breakdown
        # mixes guest and host timestamps, which is only valid on a shared clock
        a.emit(*RDTSC_TO_RAX)
        a.emit((0xE6, TSC_PORT))                  # out TSC_PORT, al
    a.label("loop")
    a.emit((0x48, 0x8B, 0x1E))                    # mov rbx, [rsi]
    if record_latency:
        a.emit(*RDTSC_TO_RAX)
        a.emit((0x48, 0x89, 0x07))                # mov [rdi], rax        (start)
    a.emit((0x48, 0x89, 0xD8))                    # mov rax, rbx
    a.emit((0x48, 0x81, 0xE3, 0x00, 0xF0, 0xFF, 0xFF))  # and rbx, -4096
    a.emit((0xA8, 0x01))                          # test al, FB_TOUCH_READ
    a.jump((0x75,), "read", 1)                    # jnz read
    a.emit((0x4C, 0x89, 0x6B, 0x40))              # mov [rbx+64], r13     (write touch)
    a.jump((0xEB,), "touched", 1)                 # jmp touched
    a.label("read")
    a.emit((0x48, 0x8B, 0x43, 0x40))              # mov rax, [rbx+64]     (read touch)
    a.label("touched")
    if record_latency:
        a.emit(*RDTSC_TO_RAX)
        a.emit((0x48, 0x89, 0x47, 0x08))          # mov [rdi+8], rax      (end)
        a.emit((0x48, 0x83, 0xC7, 0x10))          # add rdi, 16
    # content check: ((rbx & r9) ^ [rbx]) | ([rbx+8] ^ r8) must be 0
    a.emit((0x48, 0x89, 0xD8))                    # mov rax, rbx
    a.emit((0x4C, 0x21, 0xC8))                    # and rax, r9
    a.emit((0x48, 0x33, 0x03))                    # xor rax, [rbx]
    a.emit((0x48, 0x8B, 0x53, 0x08))              # mov rdx, [rbx+8]
    a.emit((0x4C, 0x31, 0xC2))                    # xor rdx, r8
    a.emit((0x48, 0x09, 0xD0))                    # or rax, rdx
    if verify_full:
        _full_check(a)
    a.jump((0x74,), "ok", 1)                      # jz ok
    a.emit((0x49, 0xFF, 0xC4))                    # inc r12
    a.label("ok")
    a.emit((0x48, 0x83, 0xC6, 0x08))              # add rsi, 8
    a.emit((0x48, 0xFF, 0xC9))                    # dec rcx
    a.jump((0x0F, 0x85), "loop", 4)               # jnz loop
    a.label("done")
    a.emit((0xE6, DONE_PORT))                     # out DONE_PORT, al
    a.jump((0xEB,), "done", 1)                    # jmp done (never re-entered)
    return a.assemble()
