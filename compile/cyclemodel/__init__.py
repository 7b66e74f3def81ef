"""Estimated cycles and milliseconds on a board, from what QEMU executed and LLVM's scheduling
models.

QEMU counts instructions, never cycles. The trace plugin (``plugin/sgtrace.c``) records every
executed translation block: its bytes, how often it ran, how often it was left by a jump, and
(``mem=on``) the loads and stores it made per memory region. Then, per board:

    core cycles      = sum over blocks of executions x the block's steady-state cycles on the
                       board's CPU (``llvm-mca``: ``mca``)
                     + taken exits x the CPU's taken-branch penalty (``cpus``)
    memory stalls    = flash wait states x (instruction lines fetched from flash + data loads
                       from flash) at the board's clock, in [min, max]: min assumes the board's
                       flash accelerator / caches hit every time (0 when it has one), max that
                       they never do (every fetch line and every load waits)
    cycles_estimate  = core + min stalls,  cycles_estimate_max = core + max stalls
    ms_estimate      = cycles / clock_hz (the board file's clock)

What it includes: issue and latency of every executed instruction on LLVM's model of the core
(in-order M4/M55/A53, dual-issue M7, out-of-order A72/A76), taken branches, flash wait states.
What it leaves out: the first pass through a block (pipeline fill), caches and DRAM on the
Raspberry Pis (their estimate assumes L1 hits: min = max), bus contention, interrupts, and
instructions LLVM cannot decode (modelled as ``nop``, counted in ``unmodeled_instructions``).
No hardware was used to make or check it: the checks are the Arm manuals' instruction timings
(``tests/compile/cyclemodel``).

The board side is the ``[timing]`` table of ``targets/<board>.toml``::

    cpu = "cortex-m4"                  # a name of cpus.CPUS
    emulate_on = "mps2-an386"          # real boards: the QEMU board with the same core
    flash_wait_states = 5              # at clock_hz, from the reference manual
    flash_line_bytes = 16              # bytes per flash read (instruction fetch line)
    flash_accelerator = true           # prefetch / caches in front of the flash (min = no stall)
"""
from __future__ import annotations

from dataclasses import dataclass

from compile.cyclemodel import mca
from compile.cyclemodel.cpus import Cpu, get_cpu
from compile.cyclemodel.trace import Trace
from compile.errors import UserError
from compile.targets import Target

NOTE = ("estimated (QEMU + LLVM scheduling model, compile/cyclemodel): cycles_estimate "
        "assumes flash accelerator/cache hits, cycles_estimate_max that every flash access "
        "waits; no hardware measured")


@dataclass(frozen=True)
class Timing:
    board: str
    cpu: Cpu
    clock_hz: int
    flash_wait_states: int = 0
    flash_line_bytes: int = 16
    flash_accelerator: bool = False
    emulate_on: str | None = None


def timing_of(target: Target) -> Timing:
    """The board's ``[timing]`` table and clock; UserError when the board file lacks them."""
    table = target.get("timing")
    if not isinstance(table, dict) or "cpu" not in table:
        raise UserError(f"targets/{target.name}.toml has no [timing] table with the board's cpu: "
                        "the cycle model needs it")
    clock = target.get("clock_hz")
    if not isinstance(clock, int) or clock <= 0:
        raise UserError(f"targets/{target.name}.toml has no clock_hz: the cycle model needs it")
    known = {"cpu", "emulate_on", "flash_wait_states", "flash_line_bytes", "flash_accelerator"}
    unknown = set(table) - known
    if unknown:
        raise UserError(f"targets/{target.name}.toml [timing]: unknown key(s) "
                        f"{', '.join(sorted(unknown))}")
    cpu = get_cpu(table["cpu"])
    try:
        return Timing(target.name, cpu, clock,
                      int(table.get("flash_wait_states", 0)),
                      int(table.get("flash_line_bytes", 16)),
                      bool(table.get("flash_accelerator", False)), table.get("emulate_on"))
    except (TypeError, ValueError):
        raise UserError(f"targets/{target.name}.toml [timing]: values must be numbers") from None


def block_cycles(trace: Trace, timing: Timing) -> dict[tuple[int, str], float]:
    """Core cycles of every executed block over the whole trace (executions x its cost + its
    taken exits x the branch penalty): for attributing the estimate to kernels."""
    blocks = {key: b for key, b in trace.blocks.items() if b.executions}
    costs = mca.block_costs(timing.cpu, {b.code for b in blocks.values()})
    penalty = timing.cpu.taken_branch_penalty
    return {key: b.executions * costs[b.code].cycles + b.taken * penalty
            for key, b in blocks.items()}


def estimate(trace: Trace, timing: Timing, inferences: int,
             code_regions: tuple[str, ...] = ("flash",),
             flash_regions: tuple[str, ...] = ("flash",)) -> dict:
    """Per-inference estimate from a trace of ``inferences`` inferences.

    ``code_regions``: the trace regions the code runs from (instruction fetch waits there);
    ``flash_regions``: the regions whose loads wait for flash. Both name regions of the trace.
    """
    if inferences <= 0:
        raise ValueError("a trace of no inference")
    blocks = [b for b in trace.blocks.values() if b.executions]
    costs = mca.block_costs(timing.cpu, {b.code for b in blocks})
    core = sum(b.executions * costs[b.code].cycles for b in blocks)
    taken = sum(b.taken for b in blocks)
    branch = taken * timing.cpu.taken_branch_penalty
    unmodeled = sum(b.executions * costs[b.code].unmodeled for b in blocks)
    traffic = trace.traffic()
    fetch_bytes = sum(b.executions * b.size for b in blocks
                      if trace.region_of(b.vaddr) in code_regions)
    flash_loads = sum(t.loads for name, t in traffic.items() if name in flash_regions)
    lines = fetch_bytes / timing.flash_line_bytes + taken if timing.flash_wait_states else 0
    stall_max = timing.flash_wait_states * (lines + flash_loads)
    stall_min = 0 if timing.flash_accelerator else stall_max
    per = float(inferences)
    low = (core + branch + stall_min) / per
    high = (core + branch + stall_max) / per
    ms = 1000.0 / timing.clock_hz
    return {
        "cycles_estimate": round(low),
        "cycles_estimate_max": round(high),
        "ms_estimate": round(low * ms, 6),
        "ms_estimate_max": round(high * ms, 6),
        "estimate": {
            "board": timing.board, "cpu": timing.cpu.name, "clock_hz": timing.clock_hz,
            "core_cycles": round(core / per), "taken_branches": round(taken / per),
            "taken_branch_cycles": round(branch / per),
            "flash_stall_cycles": [round(stall_min / per), round(stall_max / per)],
            "instructions": round(sum(b.executions * b.instructions for b in blocks) / per),
            "unmodeled_instructions": round(unmodeled / per),
            "llvm_mca": mca.version(),
            "note": NOTE,
        },
        "traffic": {name: {k: round(v / per) for k, v in t.to_json().items()}
                    for name, t in sorted(traffic.items())},
    }

