"""The guest-code generator: encodings checked byte by byte against the ISA."""
import pytest

from bench.guest import DONE_PORT, Asm, touch_loop


PROLOGUE = 2 + 4 + 3 + 2   # rdtsc; shl rdx, 32; or rax, rdx; out 0x11, al


def test_loop_starts_by_loading_the_table_entry_into_rbx():
    assert touch_loop(False)[:3] == bytes([0x48, 0x8B, 0x1E])   # mov rbx, [rsi]
    assert touch_loop(True)[PROLOGUE:PROLOGUE + 3] == bytes([0x48, 0x8B, 0x1E])


def test_timed_guest_reports_its_tsc_first():
    code = touch_loop(True)
    assert code[:2] == bytes([0x0F, 0x31]) and code[PROLOGUE - 2:PROLOGUE] == bytes([0xE6, 0x11])


def test_timing_code_present_only_when_recording():
    rdtsc = bytes([0x0F, 0x31])
    assert touch_loop(True).count(rdtsc) == 3
    assert rdtsc not in touch_loop(False)


def test_write_touch_and_read_touch_address_through_rbx():
    code = touch_loop(True)
    assert bytes([0x4C, 0x89, 0x6B, 0x40]) in code   # mov [rbx+64], r13
    assert bytes([0x48, 0x8B, 0x43, 0x40]) in code   # mov rax, [rbx+64]
    assert bytes([0x48, 0x81, 0xE3, 0x00, 0xF0, 0xFF, 0xFF]) in code   # and rbx, -4096


def test_ends_with_out_to_the_done_port_and_a_jump_back_to_it():
    code = touch_loop(False)
    assert code[-4:] == bytes([0xE6, DONE_PORT, 0xEB, 0xFC])


@pytest.mark.parametrize("record", [True, False])
def test_loop_jump_goes_back_to_the_start(record):
    code = touch_loop(record)
    # jnz rel32 just before `out`: its target must be the loop's first instruction
    jnz = code.rindex(bytes([0x0F, 0x85]))
    rel = int.from_bytes(code[jnz + 2:jnz + 6], "little", signed=True)
    assert jnz + 6 + rel == (PROLOGUE if record else 0)


def test_short_jump_out_of_range_is_refused():
    a = Asm()
    a.label("top")
    a.emit(bytes(200))
    a.jump((0xEB,), "top", 1)
    with pytest.raises(ValueError, match="out of range"):
        a.assemble()


def test_forward_jump_patched():
    a = Asm()
    a.jump((0xEB,), "end", 1)
    a.emit(bytes([0x90, 0x90]))
    a.label("end")
    assert a.assemble() == bytes([0xEB, 0x02, 0x90, 0x90])
