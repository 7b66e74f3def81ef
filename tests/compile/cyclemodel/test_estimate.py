"""compile.cyclemodel without QEMU: the trace file's reading, the difference of two runs, block
costs from llvm-mca and the estimate's arithmetic on a hand-written trace."""
from __future__ import annotations

import itertools

import pytest

from compile.cyclemodel import Timing, block_cycles, estimate, mca
from compile.cyclemodel.cpus import CPUS, get_cpu
from compile.cyclemodel.qemu import plugin_options
from compile.cyclemodel.trace import Trace, parse
from compile.errors import UserError

# two Thumb blocks: `smlad r0, r1, r2, r0` x2 then `subs r3, #1; bne` (a loop),
# and `ldr r0, [r1]; bx lr`
LOOP = "21fb0200:21fb0200:013b:fcd1"
TAIL = "0868:7047"
TRACE = f"""instructions 4003
windows 1
region 0 weights 1000 2000
region 1 flash 0 400000
tb 7 100 4 1000 999 {LOOP}
mem 7 0 10 40 0 0
tb 9 200 2 1 1 {TAIL}
mem 9 1 1 4 0 0
mem 9 -1 0 0 2 8
tb 12 100 4 0 0 {LOOP}
"""


def test_parse_reads_blocks_traffic_and_regions():
    trace = parse(TRACE)
    assert trace.instructions == 4003 and trace.windows == 1
    assert trace.regions == {"weights": (0x1000, 0x2000), "flash": (0, 0x400000)}
    loop = trace.blocks[(0x100, LOOP)]
    assert (loop.executions, loop.taken, loop.instructions, loop.size) == (1000, 999, 4, 12)
    assert loop.traffic["weights"].load_bytes == 40
    assert trace.traffic()["other"].store_bytes == 8
    assert trace.region_of(0x1800) == "weights" and trace.region_of(0x20000000) == "other"


def test_difference_of_two_runs_keeps_what_the_second_did_more():
    once, twice = parse(TRACE), parse(TRACE)
    twice.add(parse(TRACE))
    difference = Trace()
    difference.add(twice)
    difference.add(once, -1)
    assert difference.instructions == 4003
    assert difference.blocks[(0x100, LOOP)].executions == 1000
    assert difference.traffic()["weights"].load_bytes == 40


@pytest.mark.parametrize("line", ["tb 1 zz 1 1 1 00", "mem 99 0 1 1 0 0", "tb 1"])
def test_unreadable_trace_is_an_error(line):
    from compile.errors import BackendError

    with pytest.raises(BackendError, match="unreadable trace line"):
        parse(line)


def test_block_costs_follow_the_cortex_m4_manual():
    """SMLAD 1 cycle, SUBS 1, the branch's own issue 1 (its refill is the penalty, added per
    taken exit); LDR 2, BX 1."""
    costs = mca.block_costs(get_cpu("cortex-m4"), [LOOP, TAIL])
    assert costs[LOOP].cycles == pytest.approx(4, abs=0.1) and costs[LOOP].unmodeled == 0
    assert 2 <= costs[TAIL].cycles <= 4


def test_estimate_adds_branch_penalty_and_flash_waits():
    trace = parse(TRACE)
    core = block_cycles(trace, Timing("b", get_cpu("cortex-m4"), 100_000_000))
    loop_cycles = core[(0x100, LOOP)]
    # 1000 executions x ~4 cycles + 999 taken exits x 2
    assert loop_cycles == pytest.approx(1000 * 4 + 999 * 2, rel=0.03)
    fast = estimate(trace, Timing("b", get_cpu("cortex-m4"), 100_000_000), 1)
    assert fast["cycles_estimate"] == fast["cycles_estimate_max"] == round(sum(core.values()))
    assert fast["ms_estimate"] == pytest.approx(fast["cycles_estimate"] / 1e5, rel=1e-3)
    slow = estimate(trace, Timing("b", get_cpu("cortex-m4"), 100_000_000, flash_wait_states=3,
                                  flash_line_bytes=8, flash_accelerator=True), 1,
                    flash_regions=("flash", "weights"))
    fetched = 1000 * 12 + 1 * 4                         # bytes of code run from flash
    lines = fetched / 8 + 1000                           # + one new line per taken exit
    stalls = 3 * (lines + 10 + 1)                        # + the loads from weights and flash
    assert slow["estimate"]["flash_stall_cycles"] == [0, round(stalls)]
    assert slow["cycles_estimate"] == fast["cycles_estimate"]
    assert slow["cycles_estimate_max"] == pytest.approx(fast["cycles_estimate"] + stalls, abs=1)
    assert slow["traffic"]["weights"] == {"loads": 10, "load_bytes": 40, "stores": 0,
                                          "store_bytes": 0}


def test_every_cpu_is_known_to_llvm_mca():
    """Each CPU of the table decodes and schedules a trivial block (a missing model would make
    llvm-mca fall back to a generic one silently)."""
    for cpu in CPUS.values():
        code = "0844" if cpu.instruction_bytes == 2 else "2000028b"     # add r0, r1 / add x0
        assert mca.block_costs(cpu, [code])[code].cycles > 0
    with pytest.raises(UserError, match="no cycle model for CPU 'cortex-m0'"):
        get_cpu("cortex-m0")


def test_plugin_options():
    opts = plugin_options("/t/out.txt", window=(0x8011, 0x4), regions={"arena": (0x10, 0x20)})
    assert opts == ["outfile=/t/out.txt", "blocks=on", "mem=on", "on=8010", "off=4",
                    "region=arena:10:20"]


# Blocks QEMU cuts inside predication, and what else could make one block's decoding or costing
# leak into the next when many are costed in one run of llvm-mc and llvm-mca.
M55_BLOCKS = {
    "ends_in_vpst": "4018:71fe4d0f",            # adds r0, r1; vpst (its instruction in the next)
    "plain": "4118",                            # adds r1, r0, r1
    "starts_predicated": "91ed003e:4018",       # vldrbt.u8 q1, [r1] (VPT before it); adds
    "ends_in_itt": "0130:0cbf",                 # adds r0, #1; itte eq
    "starts_in_it": "0130:0230",                # adds r0, #1 x2: the itte's then/else
    "vpst_closed": "71fe4d0f:91ed003e",         # vpst; vldrbt.u8 q1, [r1]
    "undecodable_first": "ffff:4018",           # an invalid encoding, then adds
    "call": "4018:fff7feff",                    # adds; bl
}


def test_a_block_costs_the_same_whichever_blocks_it_is_costed_with(tmp_path, monkeypatch):
    """Costed alone, or with the others in any order, every block gets the same cost: no IT/VPT
    state crosses from one block into the next, and an undecodable instruction does not shift
    the decoding of the instructions after it."""
    cpu = get_cpu("cortex-m55")
    codes = list(M55_BLOCKS.values())
    alone = {code: mca._measure(cpu, [code])[0] for code in codes}
    for order in itertools.islice(itertools.permutations(codes), 0, None, 5000):
        assert dict(zip(order, mca._measure(cpu, list(order)))) == alone
    monkeypatch.setenv("SANDGLASS_CACHE", str(tmp_path))      # through the cache, too
    assert mca.block_costs(cpu, codes) == alone


def test_predication_cut_by_a_block_boundary_is_decoded_within_the_block():
    """A VPST or ITTE whose instructions lie in the next block is left out (counted unmodeled);
    the instructions a block starts with inside an earlier VPT/IT are decoded as
    themselves; an undecodable instruction is None and the next one is decoded."""
    cpu = get_cpu("cortex-m55")
    got = dict(zip(M55_BLOCKS, mca._decode(cpu, list(M55_BLOCKS.values()))))
    assert got["ends_in_vpst"] == ["adds r0, r0, r1", mca.LEFT_OUT]
    assert got["ends_in_itt"] == ["adds r0, #1", mca.LEFT_OUT]
    assert got["starts_predicated"] == ["vldrb.u8 q1, [r1]", "adds r0, r0, r1"]
    assert got["starts_in_it"] == ["adds r0, #1", "adds r0, #2"]
    assert got["vpst_closed"] == ["vpst", "vldrbt.u8 q1, [r1]"]
    assert got["undecodable_first"] == [None, "adds r0, r0, r1"]
    costs = dict(zip(M55_BLOCKS, mca._measure(cpu, list(M55_BLOCKS.values()))))
    adds = mca._measure(cpu, ["4018"])[0]
    assert (costs["ends_in_vpst"].cycles, costs["ends_in_vpst"].unmodeled) == (adds.cycles, 1)
    assert costs["undecodable_first"].unmodeled == 1 and costs["vpst_closed"].unmodeled == 0
    lone_vpst = mca._measure(cpu, ["71fe4d0f"])[0]       # a block of nothing else
    assert lone_vpst.unmodeled == 1 and lone_vpst.cycles > 0


def test_a_call_costs_a_branch_not_llvm_mcas_default():
    """llvm-mca assumes a call takes 100 cycles; here a BL issues like any branch (its refill is
    the taken-exit penalty)."""
    costs = mca._measure(get_cpu("cortex-m4"), ["4018:fff7feff"])     # adds; bl
    assert costs[0].cycles <= 3 and costs[0].unmodeled == 0


def test_block_llvm_mca_leaves_out_entirely_still_costs(tmp_path, monkeypatch):
    """A block of one Helium LE (loop end), which the M55 model has no data for: one cycle per
    instruction, counted as unmodeled, and the blocks around it keep their own costs."""
    monkeypatch.setenv("SANDGLASS_CACHE", str(tmp_path))
    le = "0ff02fc8"                                  # le lr, #-94
    add = "4018"
    costs = mca.block_costs(get_cpu("cortex-m55"), [le, add])
    assert costs[le].unmodeled == 1 and costs[le].cycles == 1.0
    assert costs[add].cycles > 0 and costs[add].unmodeled == 0
