"""Default CPU schedules for the integer kernels (LLVM targets: host x86-64, Raspberry Pi aarch64).

Without a schedule, TVM's CPU build runs each fused kernel as the legalized loop nest: every
epilogue step (int64 requantization, rounding, clip, cast) is its own loop over a full
intermediate tensor and nothing is vectorized. ``CPUKernelRule`` (a dlight ``ScheduleRule``,
applied by ``dlight.ApplyDefaultSchedule`` to every kernel MetaSchedule has no record for)
gives each kernel one loop nest that LLVM can vectorize:

* every injective block (the conv's input copy, the whole requantization epilogue) is inlined,
  so at most one reduction block and one output block remain;
* a reduction kernel (conv, depthwise conv, dense, mean) gets the output-channel axis innermost,
  split by ``CHANNEL_TILE`` and vectorized, above it a small unrolled tile of output columns
  (register blocking: the weights of one reduction step are reused ``COLUMN_TILE`` times), the
  reduction loops above those, and the epilogue computed right after each channel tile while the
  int32 accumulators are hot. LLVM keeps the accumulator tile in registers and emits widening
  int8 multiplies (on cortex-a72: SMULL 8x8->16 + SADDW into int32 lanes);
* an injective kernel is vectorized: fused into one loop when elementwise, else (pad,
  concatenation: conditions on the outer axes) along its innermost (channel) loop.

Known limit: the int64 requantization product stays scalar on NEON (LLVM widens the int32
``acc + bias`` before the multiply, so no SMULL): an int32 SQRDMULH requantization is open work.

Integer schedules only reorder exact integer arithmetic: results stay bit-exact.
dlight: https://github.com/apache/tvm/tree/main/python/tvm/s_tir/dlight
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

CHANNEL_TILE = (16, 8, 4)   # output channels per vector tile: the largest that divides C
COLUMN_TILE = (4, 2)        # output columns per register tile: the largest that divides W
VECTOR = (64, 32, 16, 8, 4)  # elements per vector step of an injective kernel
MAX_VECTOR_BODY = 4000      # characters: the integer softmax's deep int64 chain stays scalar
WHOLE_VECTOR = 256          # an innermost injective loop up to this long is vectorized whole


def _divisor(extent, choices) -> int:
    """The first of ``choices`` that divides ``extent`` (1 if none or not static)."""
    if not isinstance(extent, (int, tirx.IntImm)):
        return 1
    extent = int(extent)
    return next((c for c in choices if c <= extent and extent % c == 0), 1)


def _inline_injective(sch: s_tir.Schedule) -> list:
    """Inline every non-output injective block; returns the blocks that remain."""
    root = sch.get_sblock("root")
    while True:
        outputs = [sch.get(o) for o in sch.get_output_blocks(root)]
        for block in sch.get_child_blocks(root):
            if _is_reduction(sch, block) or any(sch.get(block).same_as(o) for o in outputs):
                continue
            try:
                sch.compute_inline(block)
                break
            except s_tir.ScheduleError:
                continue
        else:
            return sch.get_child_blocks(root)


def _is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _vectorize_injective(sch: s_tir.Schedule, block) -> None:
    """Vectorize an injective block: all its loops fused when it is elementwise, else (pad,
    concatenation, slices: conditions on the outer axes) only the innermost (channel) loop."""
    stmt = sch.get(block)
    if len(str(stmt.body)) > MAX_VECTOR_BODY:
        raise ValueError("body too large to vectorize")   # LLVM stalls on it; leave it scalar
    shape = list(stmt.writes[0].source.shape)
    loops = sch.get_loops(block)
    if all(list(r.source.shape) == shape for r in stmt.reads):
        loops = [sch.fuse(*loops)]
    inner = loops[-1]
    extent = sch.get(inner).extent
    if isinstance(extent, tirx.IntImm) and int(extent) <= WHOLE_VECTOR:
        sch.vectorize(inner)
        return
    lanes = _divisor(extent, VECTOR)
    if lanes > 1:
        sch.vectorize(sch.split(inner, [None, lanes])[1])


def _schedule_reduction(sch: s_tir.Schedule, block, epilogue) -> None:
    """Channel-vectorized, column-blocked reduction; the epilogue computed per channel tile."""
    ivs = sch.get(block).iter_vars
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in ivs]
    n_s = kinds.count(tirx.IterVar.DataPar)
    if len(loops) != len(ivs) or kinds[n_s:] != [tirx.IterVar.CommReduce] * (len(ivs) - n_s):
        raise ValueError("expected spatial loops, then reduction loops")
    spatial, reduce = loops[:n_s], loops[n_s:]
    lanes = _divisor(ivs[n_s - 1].dom.extent, CHANNEL_TILE)
    c_o, c_i = sch.split(spatial[-1], [None, lanes])
    outer = list(spatial[:-1])
    w_i = None
    if n_s >= 3:
        w_o, w_i = sch.split(spatial[-2], [None, _divisor(ivs[n_s - 2].dom.extent, COLUMN_TILE)])
        outer[-1] = w_o
    sch.reorder(*outer, c_o, *reduce, *([w_i] if w_i is not None else []), c_i)
    if w_i is not None:
        sch.unroll(w_i)
    if lanes > 1:
        sch.vectorize(c_i)
    sch.decompose_reduction(block, reduce[0])   # the init copies the loop kinds
    if epilogue is None:
        return
    acc_shape = list(sch.get(block).writes[0].source.shape)
    if list(sch.get(epilogue).writes[0].source.shape) == acc_shape:
        sch.reverse_compute_at(epilogue, c_o)
        if lanes > 1:
            sch.vectorize(sch.get_loops(epilogue)[-1])
    else:   # the epilogue also writes the next layer's padding: a loop nest of its own
        _vectorize_injective(sch, epilogue)


class CPUKernelRule(CPUScheduleRule):
    """Default schedule of one integer kernel (see the module docstring); None if it does not
    fit the patterns, and the kernel is compiled unscheduled."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        try:
            blocks = _inline_injective(sch)
            reductions = [b for b in blocks if _is_reduction(sch, b)]
            rest = [b for b in blocks if not _is_reduction(sch, b)]
            if not reductions:
                for block in rest:
                    _vectorize_injective(sch, block)
            elif len(reductions) == 1 and len(rest) <= 1:
                _schedule_reduction(sch, reductions[0], rest[0] if rest else None)
            else:
                return None
        except (s_tir.ScheduleError, ValueError):
            return None
        return sch


def default_schedule() -> tvm.transform.Pass:
    """Schedules every kernel that has none yet (``tirx.is_scheduled`` unset)."""
    return dl.ApplyDefaultSchedule(CPUKernelRule())
