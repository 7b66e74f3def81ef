"""compile/profile.py's attribution of a trace to kernels, without QEMU."""
from __future__ import annotations

from compile.cyclemodel import Timing
from compile.cyclemodel.cpus import get_cpu
from compile.cyclemodel.trace import parse
from compile.profile import attribute

# `smlad r0, r1, r2, r0` x2, subs, bne: a block that moves no data; `ldr r0, [r1]; bx lr`
TRACE = """instructions 4003
windows 1
region 0 weights 1000 2000
tb 7 100 4 1000 999 21fb0200:21fb0200:013b:fcd1
tb 9 200 2 1 1 0868:7047
mem 9 0 1 4 0 0
"""


def test_a_kernel_that_moves_no_data_has_zero_bytes():
    trace = parse(TRACE)
    timing = Timing("b", get_cpu("cortex-m4"), 1_000_000)
    rows = attribute(trace, timing, lambda address: "loop" if address < 0x200 else "tail", 1)
    assert rows["loop"]["load_bytes"] == rows["loop"]["store_bytes"] == 0
    assert rows["loop"]["instructions"] == 4000
    assert rows["tail"]["load_bytes"] == 4 and rows["tail"]["instructions"] == 2
