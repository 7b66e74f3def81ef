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

Kernels holding a NEON intrinsic (``compile.llvm_cpu.rewrites.NeonRequant``'s SQRDMULH) keep those
steps as blocks of their own, computed per channel tile four lanes at a time (LLVM cannot split
a wider call of a target intrinsic) right before the full-width epilogue; when a step does not
read the accumulator (the requantized shortcut input of a fused add), the whole kernel is
vectorized four lanes wide instead. On CPUs with the dot-product extension (rpi5, Cortex-A76),
1x1 convs on packed weights (``compile.llvm_cpu.rewrites.SDOT_BLOCK``) are tensorized with TVM's
``ARM_DOT_4x4_i8_SDOT_INTRIN``: one SDOT per 4 output x 4 input channels. Without it (rpi4,
rpi3), 1x1 convs on int16 weights (``compile.llvm_cpu.rewrites.MLA_BLOCK``) widen their input tile
once and are tensorized with ``compile.llvm_cpu.intrin.neon``'s SMLAL by lane: one SMLAL per 4 output
channels x 1 input channel x 1 column (rpi4, m=1: 2.94 M -> 2.48 M instructions in the model's
kernels, ``compile/profile.py``). On x86-64 with AVX-512 VNNI (host), 1x1 convs
(``compile.llvm_cpu.rewrites.VNNI_BLOCK``) are tensorized with ``compile.llvm_cpu.intrin.x86_vnni``'s VPDPBUSD: 16 (or 8)
output x 4 input channels per instruction; 3x3 depthwise convs and the image's first conv
(``DW_VNNI_BLOCK``) with its VPDPWSSD on row pairs: 16 (or 8) channels x 2 kernel rows per
instruction, the window unrolled so that each input row pair is loaded and interleaved once
for the columns of the tile sharing it (m=1: the depthwise kernels from 55 to 47 us,
``compile/profile.py --target host``).

On x86-64, ``compile.llvm_cpu.rewrites.X86Requant``'s requantization of the accumulator
(``REQUANT_BLOCK``) is a step of its own too, tensorized 16 (or 8) channels at a time by
``compile.llvm_cpu.intrin.x86_requant`` and unrolled over the column tile; the requantizations of a fused add's
other terms are inlined into the epilogue like the rest of it.

Integer schedules only reorder exact integer arithmetic: results stay bit-exact.
dlight: https://github.com/apache/tvm/tree/main/python/tvm/s_tir/dlight
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from compile.llvm_cpu.intrin.tiles import CHANNEL_TILE, COLUMN_TILE
from compile.lower import tir_query
from compile.llvm_cpu.rewrites import (DW_VNNI_BLOCK, MLA_BLOCK, NEON_SQRDMULH, REQUANT_BLOCK,
                                  SDOT_BLOCK, VNNI_BLOCK, WIDEN_BLOCK, has_avx512, vnni_lanes)

VECTOR = (64, 32, 16, 8, 4)  # elements per vector step of an injective kernel
MAX_VECTOR_NODES = 1000     # expression nodes: the integer softmax's deep int64 chain stays scalar
NEON_LANES = 4              # int32 lanes of one NEON register: the width of NEON intrinsics
NEON_WIDTHS = (4, 2)        # lanes LLVM lowers a NEON intrinsic at (a Q or D register of int32)
MLA_TILE = 64               # int32 accumulators of a 1x1 int16 MLA conv's register tile
WHOLE_VECTOR = 256          # an innermost injective loop up to this long is vectorized whole


def _divisor(extent, choices) -> int:
    """The first of ``choices`` that divides ``extent`` (1 if none or not static)."""
    if not isinstance(extent, (int, tirx.IntImm)):
        return 1
    extent = int(extent)
    return next((c for c in choices if c <= extent and extent % c == 0), 1)


def _is_neon(sch: s_tir.Schedule, block) -> bool:
    return tir_query.calls_llvm_intrinsic(sch.get(block).body, NEON_SQRDMULH)


def _is_x86_requant(sch: s_tir.Schedule, block) -> bool:
    return sch.get(block).name_hint.startswith(REQUANT_BLOCK)


def _is_step(sch: s_tir.Schedule, block) -> bool:
    """A block kept out of the epilogue for a target intrinsic (NEON SQRDMULH, x86 requant)."""
    return _is_neon(sch, block) or _is_x86_requant(sch, block)


def _inline_injective(sch: s_tir.Schedule, keep_steps: bool = False) -> list:
    """Inline every non-output injective block (but intrinsic steps, ``_is_step``, if
    ``keep_steps``); returns the blocks that remain."""
    root = sch.get_sblock("root")
    while True:
        outputs = [sch.get(o) for o in sch.get_output_blocks(root)]
        for block in sch.get_child_blocks(root):
            if (is_reduction(sch, block) or any(sch.get(block).same_as(o) for o in outputs)
                    or sch.get(block).name_hint == WIDEN_BLOCK
                    or (keep_steps and _is_step(sch, block))):
                continue
            try:
                sch.compute_inline(block)
                break
            except s_tir.ScheduleError:
                continue
        else:
            return sch.get_child_blocks(root)


def is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _vectorize(sch: s_tir.Schedule, loop, max_lanes: int) -> None:
    """Vectorize ``loop``; wider than ``max_lanes``: unrolled steps of ``max_lanes`` lanes."""
    extent = sch.get(loop).extent
    if isinstance(extent, tirx.IntImm) and int(extent) > max_lanes:
        outer, loop = sch.split(loop, [None, max_lanes])
        sch.unroll(outer)
    sch.vectorize(loop)


def _partition_at_part_boundary(sch: s_tir.Schedule, stmt, loop) -> list:
    """A concatenation of channel parts (the identity multiplier's shortcut add and the
    channels passed through) selects its input by ``d <= c`` and indexes parts with ``c - d``
    (after reshapes, ``c // d`` and ``c % d``): split the channel loop by the largest such d
    that divides it and partition the outer loop into one loop per part, so that in each the
    part condition is constant and the indices are offsets within one part, which TVM's
    vectorizer turns into vector loads (a condition it cannot resolve per lane makes it
    compute both sides, or scalarize). Returns the inner loops to vectorize (``[loop]`` if
    there is no such d)."""
    extent = sch.get(loop).extent
    if not isinstance(extent, tirx.IntImm):
        return [loop]
    channel = str(stmt.iter_vars[-1].var.name)   # the channel (innermost) axis
    parts = tir_query.divisors(stmt.body) + tir_query.bounds_of(stmt.body, channel)
    parts = [d for d in parts if 1 < d < int(extent) and int(extent) % d == 0]
    if not parts:
        return [loop]
    d = max(parts)
    outer, inner = sch.split(loop, [None, d])
    count = int(extent) // d
    pieces = sch.loop_partition(outer, [1] * (count - 1) + [None])
    return [sch.get_loops(sch.get_child_blocks(p)[0])[-1] for p in pieces]


def _is_elementwise(stmt) -> bool:
    """Every read at the position written and no condition on the position (the slices and
    concatenations of a partial identity multiplier have the same shapes but shifted indices
    or a per-channel choice of input: fused into one loop, their indices and conditions become
    divisions of the fused index, and the kernel is gathered element by element)."""
    write = stmt.writes[0]
    if tir_query.calls_op(stmt.body, tir_query.IF_THEN_ELSE):   # a concatenation selecting
        # its input per channel
        return False
    return all(list(r.source.shape) == list(write.source.shape)
               and all(tvm_ffi.structural_equal(a.min, b.min) and tvm_ffi.structural_equal(
                   a.extent, b.extent) for a, b in zip(r.region, write.region))
               for r in stmt.reads)


def _vectorize_injective(sch: s_tir.Schedule, block, max_lanes: int) -> None:
    """Vectorize an injective block: all its loops fused when it is elementwise, else (pad,
    concatenation, slices: conditions on the outer axes) only the innermost (channel) loop."""
    stmt = sch.get(block)
    if tir_query.expression_size(stmt.body) > MAX_VECTOR_NODES:
        raise ValueError("body too large to vectorize")   # LLVM stalls on it; leave it scalar
    neon = _is_neon(sch, block)   # before the partition below, which replaces the block
    loops = sch.get_loops(block)
    if _is_elementwise(stmt):
        inners = [sch.fuse(*loops)]
    else:
        inners = _partition_at_part_boundary(sch, stmt, loops[-1])
    for inner in inners:
        extent = sch.get(inner).extent
        if neon:   # LLVM cannot widen a NEON intrinsic of 3 (or 6, ...) lanes: it aborts
            lanes = _divisor(extent, NEON_WIDTHS)
            if lanes > 1:
                sch.vectorize(sch.split(inner, [None, lanes])[1])
            continue
        if isinstance(extent, tirx.IntImm) and int(extent) <= min(WHOLE_VECTOR, max_lanes):
            sch.vectorize(inner)
            continue
        widths = [v for v in VECTOR if v <= max_lanes]
        lanes = _divisor(extent, widths)
        wide = next((v for v in widths if isinstance(extent, tirx.IntImm) and v <= int(extent)), 1)
        if wide >= 4 * lanes and lanes < 16:   # 68 channels: 64 in wide vectors, then 4
            main, rest = sch.loop_partition(inner, [int(extent) - int(extent) % wide, None])
            sch.vectorize(sch.split(main, [None, wide])[1])
            sch.vectorize(rest)
        elif lanes > 1:
            sch.vectorize(sch.split(inner, [None, lanes])[1])


def _tile_sdot(sch: s_tir.Schedule, block, _widen=None) -> tuple:
    """``vector_arith.SDOT_BLOCK`` (1x1 conv, weights packed [C/4, K/4, 4, 4]): a register tile
    of up to 16 channels x ``COLUMN_TILE`` columns; 16 input channels at a time by
    ``neon_mla``'s SDOT by lane (4 output x 4 input channels per SDOT, the input bytes of a column
    loaded once), else 4 at a time by TVM's ``ARM_DOT_4x4_i8_SDOT_INTRIN``. Returns
    (channel-tile loop, its lanes, the tensorize step: to run once the epilogue is placed, which
    it would otherwise hinder)."""
    from compile.llvm_cpu.intrin.neon import sdot_lane_intrin
    from compile.llvm_cpu.intrin import load_tensor_intrinsics

    load_tensor_intrinsics(("arm_cpu",))
    from tvm.s_tir.tensor_intrin.arm_cpu import ARM_DOT_4x4_i8_SDOT_INTRIN

    ivs = sch.get(block).iter_vars
    *spatial, k = sch.get_loops(block)
    channels = int(ivs[-2].dom.extent)
    groups = _divisor(channels // 4, (4, 2))
    cols = _divisor(ivs[-3].dom.extent, COLUMN_TILE)
    c_o, c_t, c_4 = sch.split(spatial[-1], [None, groups, 4])
    w_o, w_i = sch.split(spatial[-2], [None, cols])
    by_lane = int(ivs[-1].dom.extent) % 16 == 0
    if by_lane:
        k_o, k_g, k_4 = sch.split(k, [None, 4, 4])
        sch.reorder(*spatial[:-2], w_o, c_o, k_o, w_i, c_t, c_4, k_g, k_4)
    else:
        k_o, k_4 = sch.split(k, [None, 4])
        sch.reorder(*spatial[:-2], w_o, c_o, k_o, w_i, c_t, c_4, k_4)
        sch.unroll(w_i)
        sch.unroll(c_t)
    init = sch.decompose_reduction(block, k_o)
    sch.vectorize(sch.get_loops(init)[-1])
    if by_lane:
        return c_o, 4 * groups, lambda: sch.tensorize(w_i, sdot_lane_intrin(cols, 4 * groups))
    return c_o, 4 * groups, lambda: sch.tensorize(c_4, ARM_DOT_4x4_i8_SDOT_INTRIN)


def _widen_at(sch: s_tir.Schedule, widen, loop, widths: tuple) -> None:
    """The converted input tile (``vector_arith.WIDEN_BLOCK``) computed once per pixel tile
    ``loop``, vectorized along the input channels by the largest of ``widths`` dividing them."""
    sch.compute_at(widen, loop)
    inner = sch.get_loops(widen)[-1]
    width = _divisor(sch.get(inner).extent, widths)
    if width > 1:
        sch.vectorize(sch.split(inner, [None, width])[1])


def _tile_mla(sch: s_tir.Schedule, block, widen) -> tuple:
    """``vector_arith.MLA_BLOCK`` (1x1 conv, int16 weights [K, C], input widened to int16 by
    ``widen``): a register tile of ``MLA_TILE`` int32 accumulators (channels x columns, and more
    rows when the channel tile is narrow), the input tile widened once per pixel tile, right
    before the channel tiles that use it; the reduction ``neon_mla.DEPTH`` input channels at a
    time by ``neon_mla``'s SMLAL-by-lane intrinsic. Returns (channel-tile loop, its lanes, the
    tensorize step: to run once the epilogue is placed)."""
    from compile.llvm_cpu.intrin.neon import DEPTH, GROUP, smlal_lane_intrin

    ivs = sch.get(block).iter_vars
    b, i, j, c, k = sch.get_loops(block)
    lanes = _divisor(ivs[3].dom.extent, CHANNEL_TILE)
    cols = _divisor(ivs[2].dom.extent, COLUMN_TILE)
    rows = 1
    if lanes * cols < MLA_TILE:
        rows = _divisor(ivs[1].dom.extent, (MLA_TILE // (lanes * cols), 2))
    i_o, i_i = sch.split(i, [None, rows])
    j_o, j_i = sch.split(j, [None, cols])
    c_o, c_i = sch.split(c, [None, lanes])
    lane_intrin = lanes % GROUP == 0 and int(ivs[4].dom.extent) % DEPTH == 0
    k_o, k_i = sch.split(k, [None, DEPTH]) if lane_intrin else (k, None)
    sch.reorder(b, i_o, j_o, c_o, k_o, i_i, j_i, *([k_i] if lane_intrin else []), c_i)
    sch.unroll(i_i)
    if not lane_intrin:
        sch.unroll(j_i)
        sch.vectorize(c_i)
    init = sch.decompose_reduction(block, k_o)
    sch.vectorize(sch.get_loops(init)[-1])
    _widen_at(sch, widen, j_o, (16, 8, 4))
    if not lane_intrin:
        return c_o, lanes, lambda: None
    return c_o, lanes, lambda: sch.tensorize(j_i, smlal_lane_intrin(cols, lanes))


def _tile_vnni(sch: s_tir.Schedule, block, widen) -> tuple:
    """``vector_arith.VNNI_BLOCK`` (1x1 conv, weights packed [C/L, K/4, L, 4], input offset
    to uint8 by ``widen``): L = 16 (or 8) output channels x 4 input channels per VPDPBUSD
    (``compile.llvm_cpu.intrin.x86_vnni``), a register tile of up to 4 vectors x ``COLUMN_TILE`` columns, the input
    tile converted once per pixel tile. Returns (channel-tile loop, its lanes, the tensorize
    step)."""
    from compile.llvm_cpu.intrin.x86_vnni import vnni_intrin

    b, i, j, c, k = sch.get_loops(block)
    ivs = sch.get(block).iter_vars
    lanes = int(sch.get(block).reads[-1].source.shape[2])   # the packed weights' L
    groups = _divisor(int(ivs[3].dom.extent) // lanes, (4, 2))
    c_o, c_t, c_l = sch.split(c, [None, groups, lanes])
    k_o, k_4 = sch.split(k, [None, 4])
    j_o, j_i = sch.split(j, [None, _divisor(ivs[2].dom.extent, COLUMN_TILE)])
    sch.reorder(b, i, j_o, c_o, k_o, j_i, c_t, c_l, k_4)
    sch.unroll(j_i)
    sch.unroll(c_t)
    init = sch.decompose_reduction(block, k_o)
    sch.vectorize(sch.get_loops(init)[-1])
    _widen_at(sch, widen, j_o, VECTOR)
    return c_o, lanes * groups, lambda: sch.tensorize(c_l, vnni_intrin(lanes))


def _tile_dw_vnni(sch: s_tir.Schedule, block, _widen=None) -> tuple:
    """``vector_arith.DW_VNNI_BLOCK`` (3xK depthwise conv, or conv of a one-channel input, on
    row-pair weights [2, K, C, 2]): 16 (or 8) channels x 2 rows per VPDPWSSD
    (``compile.llvm_cpu.intrin.x86_vnni.dw_intrin``), a register tile of up to 2 vectors x ``COLUMN_TILE``
    columns, the window loops unrolled so that LLVM loads and interleaves each input row pair
    once for the columns sharing it. Returns (channel-tile loop, its lanes, the tensorize
    step)."""
    from compile.llvm_cpu.intrin.x86_vnni import dw_intrin

    b, i, j, c, rp, rx, rt = sch.get_loops(block)
    ivs = sch.get(block).iter_vars
    lanes = vnni_lanes(int(ivs[3].dom.extent))
    groups = _divisor(int(ivs[3].dom.extent) // lanes, (2,))
    c_o, c_t, c_l = sch.split(c, [None, groups, lanes])
    j_o, j_i = sch.split(j, [None, _divisor(ivs[2].dom.extent, COLUMN_TILE)])
    sch.reorder(b, i, j_o, c_o, rp, rx, j_i, c_t, c_l, rt)
    for loop in (rp, rx, j_i, c_t):
        sch.unroll(loop)
    init = sch.decompose_reduction(block, rp)
    sch.vectorize(sch.get_loops(init)[-1])
    x = next(r.source for r in sch.get(block).reads if str(r.source.dtype) == "int8")
    one_channel = int(x.shape[3]) == 1   # an image's first conv: its pixel for every lane
    return c_o, lanes * groups, lambda: sch.tensorize(c_l, dw_intrin(lanes, one_channel))


# reduction blocks with their own tiling + tensor intrinsic (compile.llvm_cpu.rewrites's legalizations)
TENSORIZED = {SDOT_BLOCK: _tile_sdot, MLA_BLOCK: _tile_mla, VNNI_BLOCK: _tile_vnni,
              DW_VNNI_BLOCK: _tile_dw_vnni}


def _schedule_reduction(sch: s_tir.Schedule, block, epilogue, max_lanes: int,
                        steps: tuple = (), widen=None) -> None:
    """Channel-vectorized, column-blocked reduction; the epilogue computed per channel tile."""
    acc_shape = list(sch.get(block).writes[0].source.shape)
    tile = TENSORIZED.get(sch.get(block).name_hint)
    if tile is not None:
        c_o, lanes, tensorize = tile(sch, block, widen)
        _schedule_epilogue(sch, block, acc_shape, epilogue, c_o, lanes, max_lanes, steps)
        tensorize()   # after the epilogue's placement, which the tensorized block would hinder
        return
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
    _schedule_epilogue(sch, block, acc_shape, epilogue, c_o, lanes, max_lanes, steps)


def _schedule_epilogue(sch: s_tir.Schedule, reduction, acc_shape: list, epilogue, c_o,
                       lanes: int, max_lanes: int, steps: tuple) -> None:
    """The epilogue right after each channel tile ``c_o`` of the reduction (output shape
    ``acc_shape``; or, when it also writes padding, vectorized in a loop nest of its own);
    NEON steps before it."""
    if epilogue is None:
        return
    # intrinsic steps right after the channel tile: NEON ones four lanes wide (they read the
    # accumulator; a kernel whose NEON steps requantize another input too raises here and
    # is scheduled four lanes wide as a whole instead); x86 requantizations tensorized
    placed = [sch.get(reduction)]
    for b in steps:
        if not any(sch.get(p).same_as(q) for p in sch.get_producers(b) for q in placed):
            raise ValueError("a NEON step independent of the accumulator")
        sch.reverse_compute_at(b, c_o)
        placed.append(sch.get(b))
    if list(sch.get(epilogue).writes[0].source.shape) == acc_shape:
        sch.reverse_compute_at(epilogue, c_o)
        if lanes > 1:
            _vectorize(sch, sch.get_loops(epilogue)[-1], max_lanes)
    else:   # the epilogue also writes the next layer's padding: a loop nest of its own
        _vectorize_injective(sch, epilogue, max_lanes)
    for b in steps:
        if _is_x86_requant(sch, b):
            _tensorize_requant(sch, b, c_o)
        else:
            _vectorize(sch, sch.get_loops(b)[-1], NEON_LANES)


def _inline_x86_requant_of_others(sch: s_tir.Schedule, blocks: list) -> list:
    """x86 requantization steps that do not read a reduction's result as it is (a fused add's
    rescaled inputs and sum: expressions the intrinsic does not match) inlined like the rest
    of the epilogue; returns the blocks that remain."""
    kept = []
    for b in blocks:
        producers = sch.get_producers(b) if _is_x86_requant(sch, b) else []
        if _is_x86_requant(sch, b) and not (
                producers and all(is_reduction(sch, p) for p in producers)):
            sch.compute_inline(b)
        else:
            kept.append(b)
    return kept


def _tensorize_requant(sch: s_tir.Schedule, block, c_o) -> None:
    """An x86 requantization step (``vector_arith.X86Requant``) computed in channel tile
    ``c_o``: its channel loop by ``compile.llvm_cpu.intrin.x86_requant``'s intrinsic, 16 lanes (AVX-512) or 8
    at a time, unrolled over the tile; else vectorized."""
    from compile.llvm_cpu.intrin.x86_requant import requant_intrin

    loops = sch.get_loops(block)
    below = [i for i, l in enumerate(loops) if sch.get(l).same_as(sch.get(c_o))]
    tile_loops = loops[below[0] + 1:-1] if below else []
    loop = loops[-1]
    target = tvm.target.Target.current(allow_none=True)
    wide = target is not None and has_avx512(target)
    lanes = _divisor(sch.get(loop).extent, (16, 8) if wide else (8,))
    if lanes == 1:
        sch.vectorize(loop)
        return
    outer, inner = sch.split(loop, [None, lanes])
    if tile_loops:   # one vector's constants at a time, for every column of the tile
        sch.reorder(outer, *tile_loops)
    sch.tensorize(inner, requant_intrin(lanes))
    for tile in [*tile_loops, outer]:   # whole: its results stay in registers
        sch.unroll(tile)


class CPUKernelRule(CPUScheduleRule):
    """Default schedule of one integer kernel (see the module docstring); None if it does not
    fit the patterns, and the kernel is compiled unscheduled."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        # the schedules read the current target (``_tensorize_requant``: AVX-512 or AVX2 lanes);
        # MetaSchedule's seeding calls this rule outside any target context
        with tvm.target.Target(target):
            return self._apply(func)

    @staticmethod
    def _apply(func: tirx.PrimFunc):
        # NEON intrinsics (compile.llvm_cpu.rewrites.NeonRequant) cannot be split by LLVM: their
        # steps are kept as blocks of their own, four lanes wide, before the vector epilogue;
        # if that does not fit, everything is inlined and vectorized four lanes wide.
        has_neon = tir_query.calls_llvm_intrinsic(func.body, NEON_SQRDMULH)
        has_x86_requant = any(name.startswith(REQUANT_BLOCK)
                              for name in tir_query.block_names(func.body))
        has_steps = has_neon or has_x86_requant
        for keep_steps in ((True, False) if has_steps else (False,)):
            sch = s_tir.Schedule(func)
            max_lanes = NEON_LANES if has_neon and not keep_steps else max(VECTOR)
            try:
                blocks = _inline_injective(sch, keep_steps)
                if keep_steps and has_x86_requant:
                    blocks = _inline_x86_requant_of_others(sch, blocks)
                reductions = [b for b in blocks if is_reduction(sch, b)]
                steps = [b for b in blocks if keep_steps and not is_reduction(sch, b)
                         and _is_step(sch, b)]
                widen = [b for b in blocks if sch.get(b).name_hint == WIDEN_BLOCK]
                rest = [b for b in blocks if not is_reduction(sch, b) and b not in steps
                        and b not in widen]
                if not reductions and not steps:
                    for block in rest:
                        _vectorize_injective(sch, block, max_lanes)
                elif len(reductions) == 1 and len(rest) <= 1 and (rest or not steps):
                    _schedule_reduction(sch, reductions[0], rest[0] if rest else None,
                                        max_lanes, tuple(steps), widen[0] if widen else None)
                else:
                    continue
            except (s_tir.ScheduleError, ValueError, TypeError, RuntimeError):
                continue   # (TVM's internal errors arrive as TypeError or RuntimeError)
            return sch
        return None


def default_schedule() -> tvm.transform.Pass:
    """Schedules every kernel that has none yet (``tirx.is_scheduled`` unset)."""
    return dl.ApplyDefaultSchedule(CPUKernelRule())
