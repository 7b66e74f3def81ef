"""The cycle model against the Arm manuals: small loops whose cycle counts the Cortex-M4 Technical
Reference Manual (DDI 0439B, Table 3-1, "Cortex-M4 instruction set summary") gives, each run the
whole way: assembled into a bare-metal image, run on QEMU's mps2-an386 under the trace plugin,
costed by compile.cyclemodel. The estimate must land within 10 % of the manual's count.

Manual timings used: ALU op 1 cycle; SMLAD 1; LDR 2, but N LDRs in a row pipeline to N + 1;
a taken branch 1 + P, where P (pipeline refill) is 1..3 cycles, so a loop's count is a range.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from compile.cyclemodel import Timing, estimate
from compile.cyclemodel.cpus import get_cpu
from compile.cyclemodel.qemu import plugin_argument, read_trace

pytestmark = pytest.mark.emulator

ITERATIONS = 1000
QEMU = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
        "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"]

# the loop: BODY, then `subs r3, #1` (1 cycle) and `bne loop` (taken: 1 + P, P = 1..3)
LOOP = 1 + 1
P = (1, 3)

# name -> (loop body, the manual's cycles for the body)
CASES = {
    # SMLAD: 1 cycle each, accumulating into the same register (no stall on the accumulator)
    "smlad": ("\n".join(["smlad r0, r1, r2, r0"] * 8), 8),
    # 8 independent LDRs back to back pipeline: N + 1 = 9
    "ldr-pipelined": ("\n".join(f"ldr r{4 + k % 4}, [r1, #{4 * k}]" for k in range(8)), 9),
    # LDR then an ALU op: the LDR is not followed by a load, so it takes its 2 cycles; x4
    "ldr-then-add": ("\n".join(["ldr r0, [r1]", "add r2, r2, r0"] * 4), 4 * (2 + 1)),
    # nothing but the loop's own counter and branch
    "branch": ("", 0),
}

SOURCE = """\
    .syntax unified
    .thumb
    .text
vectors:
    .word 0x20010000
    .word reset
    .thumb_func
reset:
    bl bench
    bl bench_end
    ldr r1, =exit_block
    movs r0, #0x20
    bkpt 0xab
1:  b 1b
    .p2align 2
exit_block:
    .word 0x20026, 0
    .thumb_func
bench:
    ldr r3, ={iterations}
    ldr r1, =0x20000000
    .p2align 2
loop:
{body}
    subs r3, #1
    bne loop
    bx lr
    .thumb_func
bench_end:
    bx lr
"""


def _image(tmp_path: Path, body: str) -> tuple[Path, dict[str, int]]:
    src = tmp_path / "bench.S"
    src.write_text(SOURCE.format(iterations=ITERATIONS, body=body))
    elf = tmp_path / "bench.elf"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-nostdlib",
                    "-Wl,-Ttext=0", "-o", str(elf), str(src)], check=True)
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    symbols = {parts[2]: int(parts[0], 16) for parts in map(str.split, out.splitlines())
               if len(parts) == 3}
    return elf, symbols


@pytest.mark.parametrize("case", sorted(CASES))
def test_estimate_matches_the_manual(tmp_path, case):
    body, body_cycles = CASES[case]
    elf, symbols = _image(tmp_path, body)
    out = tmp_path / "trace.txt"
    subprocess.run([*QEMU, *plugin_argument(out, window=(symbols["bench"], symbols["bench_end"])),
                    "-kernel", str(elf)], check=True, timeout=60, capture_output=True)
    trace = read_trace(out)
    assert trace.windows == 1
    body_instructions = len([ln for ln in body.splitlines() if ln.strip()])
    assert trace.instructions == pytest.approx(ITERATIONS * (body_instructions + 2), rel=0.01)
    timing = Timing("mps2-an386", get_cpu("cortex-m4"), 25_000_000)
    per_iteration = estimate(trace, timing, 1)["cycles_estimate"] / ITERATIONS
    low, high = (body_cycles + LOOP + p for p in P)
    # `pytest -s` shows the figures the README quotes
    print(f"{case}: {per_iteration:.1f} cycles per iteration, manual {low}..{high} (P = 1..3)")
    assert 0.9 * low <= per_iteration <= 1.1 * high, (case, per_iteration, (low, high))
