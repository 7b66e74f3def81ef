"""Cortex-M kernels that use the core: int8 dot products as C helper calls.

The convolutions with ``groups == 1`` reduce ``acc += int32(x[c]) * int32(w[o, c])`` over
the input channels c.  ``ReduceLastWeights`` makes c the last, contiguous axis of the weights
too (OHWI, as CMSIS-NN), ``lower.tile_channels`` puts a tile of 2 pixels x 2 output
channels right outside the c loop, and ``tensorize_dots`` replaces those loops by a TVM
``TensorIntrin`` (one per length K, registered on first use) whose implementation is
``T.call_extern("sg_dot22_s8", &x[..], &w[o, ..], K, &acc[0], acc_stride)`` (``sg_dot2_s8``
/ ``sg_dot_s8`` for 2 / 1 products where the tile does not fit): a ``static inline``
function of ``firmware/sg_kernels.h`` that picks the core's instructions at C compile time
(the board file's ``-mcpu``):

* ``__ARM_FEATURE_MVE`` (Cortex-M55, Helium): ``vmladavaq_p_s8``, 16 MACs per instruction,
  tail-predicated with ``vctp8q``;
* ``__ARM_FEATURE_DSP`` (Cortex-M4/M7): ``SXTB16`` + ``SMLAD`` (``arm_acle.h``), two 16x16
  MACs per instruction, 4 inputs per 32-bit load, each word unpacked once for 2 products;
* otherwise plain C (the host, where the helpers are unit-tested against numpy).

Integer only: ``sum x * w`` in int32 is exact (|x*w| <= 2^14, K < 2^17), so every path gives
the same bits.  The input zero point is already folded into the bias by the integer
lowering, so the body is the plain product.  Reductions that do not match (K % 4 != 0,
padded reads, dense layers whose weights stay [in, out]) keep their scalar loops.  TVM's own
Arm intrinsics (``tvm.s_tir.tensor_intrin.arm_cpu``) are LLVM only; these go through our C
printer (``cemit`` prints ``call_extern`` and ``tvm_access_ptr``).
"""
from __future__ import annotations

import tvm
from tvm import relax, s_tir
from tvm.relax.dpl import is_op, wildcard
from tvm.script import tirx as T

# dot products per call -> C helper of firmware/sg_kernels.h
HELPERS = {1: "sg_dot_s8", 2: "sg_dot2_s8", 4: "sg_dot22_s8"}
DOT_ROWS = 2                  # output channels per helper call where the channels allow it
DOT_PIXELS = 2                # and pixels, for stride-1 1x1 convolutions
MIN_DOT = 4                   # shorter reductions stay scalar loops


@relax.transform.function_pass(opt_level=0, name="ReduceLastWeights")
def ReduceLastWeights(func, mod, ctx):  # noqa: ARG001  (pass signature)
    """``conv2d(x, w, kernel_layout="HWIO", groups=1)`` -> ``conv2d(x, permute_dims(w),
    kernel_layout="OHWI")``: the input channels (the reduction) become the weights' last,
    contiguous axis, as in CMSIS-NN.  ``FoldConstant`` then transposes constant weights
    at compile time."""
    pattern = is_op("relax.nn.conv2d")(wildcard(), wildcard())

    def rewrite(call, _matchings):
        attrs = call.attrs
        if (str(attrs.kernel_layout) != "HWIO" or int(attrs.groups) != 1
                or str(attrs.data_layout) != "NHWC"):
            return call
        w = relax.op.permute_dims(call.args[1], [3, 0, 1, 2])
        return relax.op.nn.conv2d(call.args[0], w, attrs.strides, attrs.padding,
                                  attrs.dilation, 1, "NHWC", "OHWI", attrs.out_layout,
                                  attrs.out_dtype)

    return relax.dpl.rewrite_call(pattern, rewrite, func)


def dot_intrin(k: int, rows: int = 1) -> str:
    """Name of the registered TensorIntrin: ``rows`` int8 dot products of length ``k`` that
    share the input, ``sg_dot_s8`` (1 row) or ``sg_dot2_s8`` (2 rows, ``ws`` elements
    apart: the weights' row stride as laid out, passed to the helper)."""
    name = f"sg_dot{rows}_s8_k{k}"
    if s_tir.TensorIntrin.get(name, allow_missing=True) is not None:
        return name

    # w: OHWI weights (ReduceLastWeights), ``rows`` output channels.  The strides are
    # symbolic so that LowerMatchBuffer binds them to the real layout (a buffer declared
    # without strides is taken as compact, whatever the region it is matched to); the
    # reduction axis must be contiguous (stride 1), which check_lowers enforces.
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        x = T.match_buffer(a, (k,), "int8", offset_factor=1, strides=[1])
        w = T.match_buffer(b, (rows, 1, 1, k), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), 1])
        acc = T.match_buffer(c, (rows,), "int32", offset_factor=1, strides=[1])
        with T.sblock("root"):
            T.reads(acc[0:rows], x[0:k], w[0:rows, 0, 0, 0:k])
            T.writes(acc[0:rows])
            for j, i in T.grid(rows, k):
                with T.sblock("update"):
                    vj, vi = T.axis.remap("SR", [j, i])
                    acc[vj] = acc[vj] + T.cast(x[vi], "int32") * T.cast(w[vj, 0, 0, vi],
                                                                        "int32")

    @T.prim_func(s_tir=True)
    def dot1(a: T.handle, b: T.handle, c: T.handle) -> None:
        x = T.match_buffer(a, (k,), "int8", offset_factor=1, strides=[1])
        w = T.match_buffer(b, (1, 1, 1, k), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), 1])
        acc = T.match_buffer(c, (1,), "int32", offset_factor=1, strides=[1])
        with T.sblock("root"):
            T.reads(acc[0:1], x[0:k], w[0:1, 0, 0, 0:k])
            T.writes(acc[0:1])
            acc[0] = T.call_extern("int32", HELPERS[1], x.access_ptr("r"), w.access_ptr("r"),
                                   k, acc[0])

    @T.prim_func(s_tir=True)
    def dot2(a: T.handle, b: T.handle, c: T.handle) -> None:
        ws = T.int32()
        x = T.match_buffer(a, (k,), "int8", offset_factor=1, strides=[1])
        w = T.match_buffer(b, (2, 1, 1, k), "int8", offset_factor=1,
                           strides=[ws, T.int32(), T.int32(), 1])
        acc = T.match_buffer(c, (2,), "int32", offset_factor=1, strides=[1])
        with T.sblock("root"):
            T.reads(acc[0:2], x[0:k], w[0:2, 0, 0, 0:k])
            T.writes(acc[0:2])
            T.evaluate(T.call_extern("int32", HELPERS[2], x.access_ptr("r"),
                                     w.access_ptr("r"), ws, k, acc.access_ptr("rw")))

    s_tir.TensorIntrin.register(name, desc, dot1 if rows == 1 else dot2)
    return name


def dot22_intrin(k: int) -> str:
    """Name of the registered TensorIntrin for a tile of 2 pixels x 2 output channels: 4
    dot products of length ``k`` (``sg_dot22_s8``), each input and weight word loaded and
    unpacked once for two products.  The pixels' inputs lie ``xs`` elements apart and the
    channels' weights ``ws`` apart, as laid out (strided convolutions, weights of kernels
    larger than 1x1 whose reduction is split into taps)."""
    name = f"sg_dot22_s8_k{k}"
    if s_tir.TensorIntrin.get(name, allow_missing=True) is not None:
        return name

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        x = T.match_buffer(a, (2, k), "int8", offset_factor=1, strides=[T.int32(), 1])
        w = T.match_buffer(b, (2, 1, 1, k), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), 1])
        acc = T.match_buffer(c, (2, 2), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(acc[0:2, 0:2], x[0:2, 0:k], w[0:2, 0, 0, 0:k])
            T.writes(acc[0:2, 0:2])
            for i, j, r in T.grid(2, 2, k):
                with T.sblock("update"):
                    vi, vj, vr = T.axis.remap("SSR", [i, j, r])
                    acc[vi, vj] = acc[vi, vj] + T.cast(x[vi, vr], "int32") * T.cast(
                        w[vj, 0, 0, vr], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        xs = T.int32()
        ws = T.int32()
        stride = T.int32()
        x = T.match_buffer(a, (2, k), "int8", offset_factor=1, strides=[xs, 1])
        w = T.match_buffer(b, (2, 1, 1, k), "int8", offset_factor=1,
                           strides=[ws, T.int32(), T.int32(), 1])
        acc = T.match_buffer(c, (2, 2), "int32", offset_factor=1, strides=[stride, 1])
        with T.sblock("root"):
            T.reads(acc[0:2, 0:2], x[0:2, 0:k], w[0:2, 0, 0, 0:k])
            T.writes(acc[0:2, 0:2])
            T.evaluate(T.call_extern("int32", HELPERS[4], x.access_ptr("r"), xs,
                                     w.access_ptr("r"), ws, k, acc.access_ptr("rw"), stride))

    s_tir.TensorIntrin.register(name, desc, impl)
    return name


def check_lowers(sch: s_tir.Schedule) -> None:
    """Raise if the tensorized calls cannot be bound to the buffers they read: the intrinsics
    require a contiguous reduction axis (stride 1), which ``LowerMatchBuffer`` checks when it
    binds their strides.  Run on each trial so that a mismatch leaves the loop scalar instead
    of failing the whole kernel later."""
    tvm.transform.Sequential([
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.LowerMatchBuffer(),
    ])(sch.mod)


def tensorize_dots(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """``func`` with every int8 dot-product reduction (innermost reduction loop of extent
    K >= 4, K % 4 == 0) computed by the helpers: ``sg_dot22_s8`` where ``tile_channels``
    put 2 pixels x 2 output channels right outside the K loop (and the pixels' inputs are
    contiguous), ``sg_dot2_s8`` for 2 channels, else ``sg_dot_s8``.  Reductions that do not
    match (padded or strided reads, other bodies) stay as they are."""
    sch = s_tir.Schedule(func)
    for name in reduction_blocks(sch):
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        n = sum(1 for iv in sch.get(block).iter_vars if int(iv.iter_type) == 2)
        k = sch.get(loops[-1]).extent if loops else None
        if (not n or not isinstance(k, tvm.tirx.IntImm) or int(k) < MIN_DOT or int(k) % 4):
            continue
        # (intrinsic, loop to decompose the init at, loop to tensorize)
        for make, first, inner in ((dot22_intrin, -n - 2, -3),
                                   (lambda k: dot_intrin(k, 2), -n - 1, -2),
                                   (lambda k: dot_intrin(k, 1), -n, -1)):
            if len(loops) < -first:
                continue
            trial = sch.copy()
            try:
                trial.decompose_reduction(block, loops[first])
                trial.tensorize(loops[inner], make(int(k)))
                check_lowers(trial)
            except (s_tir.ScheduleError, tvm.error.InternalError, ValueError):
                continue
            sch = trial
            break
    return sch.mod["main"]


def all_blocks(sch: s_tir.Schedule) -> list:
    """Every block under the root, depth first."""
    out, todo = [], [sch.get_sblock("root")]
    while todo:
        children = sch.get_child_blocks(todo.pop())
        out.extend(children)
        todo.extend(children)
    return out


def reduction_blocks(sch: s_tir.Schedule) -> list[str]:
    """Names of the reduction blocks, looked up again by name (schedules are copied)."""
    return [sch.get(b).name_hint for b in all_blocks(sch)
            if any(int(iv.iter_type) == 2 for iv in sch.get(b).iter_vars)]
