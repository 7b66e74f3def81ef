"""compile/llvm_cpu/rewrites.py: the requantization and conv forms LLVM vectorizes on NEON/AVX-512.

Before/Expected for the bias fold, the narrowed constants' shape, and the pairwise int16 convs
equal to TVM's own conv2d legalization on random int8 data (full range, incl. -128 inputs)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from compile.targets import get_target
from compile.targets import resolve_native
from compile.llvm_cpu.rewrites import (DW_VNNI_BLOCK, MLA_BLOCK, NEON_SQRDMULH, REQUANT_BLOCK,
                                  VNNI_BLOCK, WIDEN_BLOCK, FoldBiasIntoRequant, MergeClips,
                                  NarrowConstants, NeonRequant, RoundingNudge, SmallInputHighMul,
                                  VnniConvs, X86Requant, conv2d_legalizer, has_vnni,
                                  legalize_conv2d, pack_dw_pairs, pack_sdot_weights,
                                  pack_vnni_weights)

def _run(mod, *args):
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    return vm["main"](*(tvm.runtime.tensor(a) for a in args)).numpy()


B = np.array([7, -3], np.int32)
M = np.array([1 << 30, 3 << 28], np.int64)


def test_fold_bias_into_requant():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2), "int32")) -> R.Tensor((1, 2), "int64"):
            with R.dataflow():
                acc = R.add(x, R.const(B, "int32"))
                wide = R.multiply(R.astype(acc, "int64"), R.const(M, "int64"))
                y = R.add(wide, R.const(1 << 30, "int64"))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2), "int32")) -> R.Tensor((1, 2), "int64"):
            with R.dataflow():
                wide = R.multiply(R.astype(x, "int64"), R.const(M, "int64"))
                y = R.add(wide, R.const(B.astype(np.int64) * M + (1 << 30), "int64"))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldBiasIntoRequant(Before), Expected)


def test_fold_bias_leaves_other_adds_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2), "int32"), b: R.Tensor((2,), "int32")
                 ) -> R.Tensor((1, 2), "int64"):
            with R.dataflow():   # the bias is no constant: nothing to fold
                wide = R.multiply(R.astype(R.add(x, b), "int64"), R.const(M, "int64"))
                y = R.add(wide, R.const(1 << 30, "int64"))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldBiasIntoRequant(Before), Before)


def test_narrow_constants_widens_inside_the_kernel():
    big = np.array([1 << 40, 1], np.int64)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2), "int32")) -> R.Tensor((1, 2), "int64"):
            with R.dataflow():
                wide = R.multiply(R.astype(x, "int64"), R.const(M, "int64"))
                y = R.add(wide, R.const(big, "int64"))
                R.output(y)
            return y

    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.FoldConstant(), NarrowConstants,
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(), relax.transform.FuseTIR()])
    mod = seq(Before)
    kernels = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 1, "the widening is fused into the consumer kernel"
    signature = kernels[0].script().split("def main(")[1].split("):")[0]
    dtypes = sorted(re.findall(r'"(int\d+)"\)', signature))
    # x int32, M narrowed to int32, the offset (2**40 does not fit) kept int64, out int64
    assert dtypes == ["int32", "int32", "int64", "int64"]
    x = np.array([[123456, -98765]], np.int32)
    out = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x))
    np.testing.assert_array_equal(out.numpy(), x.astype(np.int64) * M + big)


def _nudge(lo, hi):
    @I.ir_module
    class Module:
        @R.function
        def main(h: R.Tensor((1, 2), "int32")) -> R.Tensor((1, 2), "int32"):
            with R.dataflow():
                nudge = R.where(R.less(h, R.const(0, "int32")), R.const(lo, "int32"),
                                R.const(hi, "int32"))
                y = R.add(h, nudge)
                R.output(y)
            return y

    return Module


def test_rounding_nudge_becomes_a_sign_shift():
    half = np.array([1, 4], np.int32)

    @I.ir_module
    class Expected:
        @R.function
        def main(h: R.Tensor((1, 2), "int32")) -> R.Tensor((1, 2), "int32"):
            with R.dataflow():
                sign = R.right_shift(h, R.const(31, "int32"))
                y = R.add(R.add(h, sign), R.const(half, "int32"))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(RoundingNudge(_nudge(half - 1, half)), Expected)
    # a channel that does not round (half = 0: both branches 0) keeps the select
    kept = _nudge(np.array([0, 3], np.int32), np.array([0, 4], np.int32))
    tvm.ir.assert_structural_equal(RoundingNudge(kept), kept)


def _requant(mult):
    @I.ir_module
    class Module:
        @R.function
        def main(acc: R.Tensor((1, 2), "int32")) -> R.Tensor((1, 2), "int32"):
            with R.dataflow():
                wide = R.multiply(R.astype(acc, "int64"), R.const(mult, "int64"))
                high = R.right_shift(R.add(wide, R.const(1 << 30, "int64")), R.const(31, "int64"))
                y = R.astype(high, "int32")
                R.output(y)
            return y

    return Module


def test_neon_requant_is_one_sqrdmulh():
    after = NeonRequant(_requant(M))
    assert NEON_SQRDMULH in after.script() and "int64" not in after["main"].script()
    prims = [f for _, f in after.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(prims) == 1 and not re.search(r"\"int64\"\)|astype|T.Cast", prims[0].script())
    # SQRDMULH's operand is int32: a multiplier of 2**31 stays int64 arithmetic
    wide = _requant(np.array([1 << 31, 1], np.int64))
    tvm.ir.assert_structural_equal(NeonRequant(wide), wide)


def _conv_module(x_shape, w, groups, strides, kernel_layout):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(
                x, relax.const(w, "int8"), strides=strides, groups=groups, data_layout="NHWC",
                kernel_layout=kernel_layout, out_dtype="int32"))
        bb.emit_func_output(y)
    return bb.get()


CASES = {   # x shape, weight shape, groups, strides, kernel layout
    "pointwise": ((1, 5, 6, 8), (1, 1, 8, 12), 1, (1, 1), "HWIO"),
    "pointwise_stride2": ((1, 5, 5, 6), (1, 1, 6, 4), 1, (2, 2), "HWIO"),
    "depthwise": ((1, 6, 7, 16), (3, 3, 16, 1), 16, (1, 1), "HWOI"),
    "depthwise_stride2": ((1, 7, 7, 8), (3, 3, 8, 1), 8, (2, 2), "HWOI"),
    "full_3x3": ((1, 9, 9, 1), (3, 3, 1, 16), 1, (2, 2), "HWIO"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("weights", ["symmetric", "with_minus_128"])
def test_pairwise_conv_equals_topi(case, weights):
    x_shape, w_shape, groups, strides, layout = CASES[case]
    rng = np.random.default_rng(len(case))
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    if weights == "with_minus_128":
        w.flat[0] = -128   # two products could overflow int16: TVM's own conv is kept
    mod = _conv_module(x_shape, w, groups, strides, layout)
    ours = relax.transform.LegalizeOps({"relax.nn.conv2d": legalize_conv2d})(mod)
    theirs = relax.transform.LegalizeOps()(mod)
    uses_int16 = "int16" in ours.script()
    assert uses_int16 == (weights == "symmetric"), case
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    x.flat[::3] = -128      # the extreme products: -128 * +-127
    results = [_run(m, x) for m in (ours, theirs)]
    np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("case", ["pointwise", "pointwise_stride2"])
def test_aarch64_pointwise_conv_is_int16_mla_equal_to_topi(case):
    """rpi4 (no dot product): 1x1 convs become the int16 MLA form (weights widened at compile
    time, -128 included; the input widened in its own block), equal to TVM's own conv."""
    x_shape, w_shape, groups, strides, layout = CASES[case]
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    w.flat[0] = -128
    mod = _conv_module(x_shape, w, groups, strides, layout)
    legalizer = conv2d_legalizer(tvm.target.Target(get_target("rpi4").tvm))
    ours = relax.transform.LegalizeOps({"relax.nn.conv2d": legalizer})(mod)
    text = ours.script()
    assert f'"{MLA_BLOCK}"' in text and f'"{WIDEN_BLOCK}"' in text
    assert re.search(r'T.Buffer\(\(T.int64\({}\), T.int64\({}\)\), "int16"\)'.format(
        *w_shape[2:]), text)   # the weights: [K, C] int16
    theirs = relax.transform.LegalizeOps()(mod)
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    x.flat[::3] = -128
    results = [_run(m, x) for m in (ours, theirs)]
    np.testing.assert_array_equal(*results)


VNNI_CPU = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"}  # AVX-512 VNNI


def _assert_equal_to_topi(mod, ours, rng, x_shape, instruction: str) -> None:
    """``ours`` (``mod`` legalized for VNNI) equal to TVM's own conv on int8 inputs with -128,
    and so is the whole host build (default schedules) with ``instruction`` in its assembly when
    this machine has AVX-512 VNNI."""
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    x.flat[::3] = -128
    modules = [ours, relax.transform.LegalizeOps()(mod)]
    native = tvm.target.Target(resolve_native({"kind": "llvm", "mcpu": "native"}))
    if has_vnni(native):
        from compile.llvm_cpu.pipeline import compile_relax_module
        built = compile_relax_module(mod, native).executable
        assert instruction in built.mod.imports[0].inspect_source("asm")
        modules.append(built)
    results = [relax.VirtualMachine(m if isinstance(m, tvm.runtime.Executable)
                                    else tvm.compile(m, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy() for m in modules]
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


@pytest.mark.parametrize("shape", [((1, 5, 6, 8), (1, 1, 8, 32), (1, 1)),    # 16-lane VPDPBUSD
                                   ((1, 5, 5, 12), (1, 1, 12, 8), (2, 2))])  # 8-lane (ymm)
def test_x86_vnni_pointwise_conv_equals_topi(shape):
    """x86 with AVX-512 VNNI: 1x1 convs become uint8 x int8 dot products (input + 128, minus
    128 * sum(w) per channel; -128 weights and inputs included; ``VnniConvs``), equal to TVM's
    own conv -- legalized only, and compiled with VPDPBUSD when this machine has it."""
    x_shape, w_shape, strides = shape
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    w.flat[0] = -128
    mod = _conv_module(x_shape, w, 1, strides, "HWIO")
    ours = relax.transform.LegalizeOps(
        {"relax.nn.conv2d": conv2d_legalizer(tvm.target.Target(VNNI_CPU))})(VnniConvs(mod))
    assert f'"{VNNI_BLOCK}"' in ours.script() and '"uint8"' in ours.script()
    _assert_equal_to_topi(mod, ours, rng, x_shape, "vpdpbusd")


@pytest.mark.parametrize("case", [((1, 6, 7, 16), 16, (1, 1)),    # 16-lane VPDPWSSD
                                  ((1, 7, 7, 24), 24, (2, 2)),    # 8-lane (ymm)
                                  ((1, 5, 6, 32), 32, (1, 1)),    # two 16-lane vectors
                                  ((1, 9, 9, 1), 16, (2, 2))])    # one input channel (HWIO)
def test_x86_vnni_depthwise_conv_equals_topi(case):
    """x86 with AVX-512 VNNI: 3x3 depthwise convs, and 3x3 convs of a one-channel image, become
    row-pair VPDPWSSD kernels (int16 weights, a zero in the second pair; -128 weights and inputs
    included), equal to TVM's own conv -- legalized only, and compiled with VPDPWSSD when this
    machine has it."""
    x_shape, c, strides = case
    rng = np.random.default_rng(13)
    one_channel = x_shape[3] == 1
    w = rng.integers(-128, 128, (3, 3, 1, c) if one_channel else (3, 3, c, 1)).astype(np.int8)
    w.flat[0] = -128
    mod = _conv_module(x_shape, w, 1 if one_channel else c, strides,
                       "HWIO" if one_channel else "HWOI")
    ours = relax.transform.LegalizeOps(
        {"relax.nn.conv2d": conv2d_legalizer(tvm.target.Target(VNNI_CPU))})(mod)
    assert f'"{DW_VNNI_BLOCK}"' in ours.script()
    _assert_equal_to_topi(mod, ours, rng, x_shape, "vpdpwssd")


def test_dw_pair_weight_packing():
    w = np.arange(3 * 3 * 8, dtype=np.int64).reshape(3, 3, 8, 1).astype(np.int8)
    wp = pack_dw_pairs(w)
    assert wp.shape == (2, 3, 8, 2) and wp.dtype == np.int16
    for p, col, ch, t in np.ndindex(wp.shape):   # pair p reads kernel rows p + t
        expected = 0 if (p, t) == (1, 0) else w[p + t, col, ch, 0]
        assert wp[p, col, ch, t] == expected


def test_vnni_weight_packing():
    w = np.arange(8 * 24, dtype=np.int64).reshape(1, 1, 8, 24).astype(np.int8)
    wp = pack_vnni_weights(w)
    assert wp.shape == (3, 2, 8, 4)   # 24 channels: 8 per (ymm) VPDPBUSD
    for co, ko, ci, ki in np.ndindex(wp.shape):
        assert wp[co, ko, ci, ki] == w[0, 0, 4 * ko + ki, 8 * co + ci]
    assert pack_vnni_weights(np.zeros((1, 1, 4, 32), np.int8)).shape == (2, 1, 16, 4)


def test_sdot_weight_packing():
    w = np.arange(8 * 12, dtype=np.int64).reshape(1, 1, 8, 12).astype(np.int8)
    wp = pack_sdot_weights(w)
    assert wp.shape == (3, 2, 4, 4)   # [C/4, K/4, 4 channels, 4 input channels]
    for co, ko, ci, ki in np.ndindex(wp.shape):
        assert wp[co, ko, ci, ki] == w[0, 0, 4 * ko + ki, 4 * co + ci]


def _rounding_requant(mult, offset, shift):
    """acc -> RoundingDivideByPOT(int32((int64(acc) * M + R) >> 31), s) as the lowering and
    ``RoundingNudge`` write it (half = 2**(s-1))."""
    half = (1 << (shift - 1)).astype(np.int32)

    @I.ir_module
    class Module:
        @R.function
        def main(acc: R.Tensor((64, 4), "int32")) -> R.Tensor((64, 4), "int32"):
            with R.dataflow():
                wide = R.multiply(R.astype(acc, "int64"), R.const(mult, "int64"))
                high = R.astype(R.right_shift(R.add(wide, R.const(offset, "int64")),
                                              R.const(31, "int64")), "int32")
                nudged = R.add(R.add(high, R.right_shift(high, R.const(31, "int32"))),
                               R.const(half, "int32"))
                y = R.right_shift(nudged, R.const(shift.astype(np.int32), "int32"))
                R.output(y)
            return y

    return Module


def test_x86_requant_is_one_block_equal_on_every_sign_and_tie():
    """X86Requant: MultiplyByQuantizedMultiplier + rounding shift -> one REQUANT_BLOCK; equal
    for accumulators of both signs, around the sign flip of the product (N) and on the ties
    of both roundings (bias folded into R, per-channel M and shift, M = 2**30 included)."""
    mult = np.array([1 << 30, 1518500250, 2 ** 31 - 1, 1 << 30], np.int64)
    bias = np.array([0, -37, 1000, 5], np.int64)
    offset = bias * mult + (1 << 30)
    shift = np.array([1, 3, 7, 12], np.int64)
    before = _rounding_requant(mult, offset, shift)
    after = X86Requant(before)
    prims = [f for _, f in after.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(prims) == 1 and f'"{REQUANT_BLOCK}"' in prims[0].script()
    assert "right_shift" not in after["main"].script()
    rng = np.random.default_rng(5)
    acc = rng.integers(-2 ** 24, 2 ** 24, (64, 4)).astype(np.int32)
    acc[:16] = np.arange(-8, 8)[:, None] - bias[None, :]          # around x + bias = 0
    # x * M + R on exact ties of the rounding shift: x + bias = +-(2k+1) * 2**(s-1)
    # (M = 2**30: the high half is exactly (x + bias + 1) / 2)
    acc[16:24, 0] = np.array([1, 3, 5, -1, -3, -5, -7, 9]) * 2 - 1 - bias[0]
    np.testing.assert_array_equal(_run(after, acc), _run(before, acc))
    # a channel that does not round (s = 0) is not this form: left alone
    kept = _rounding_requant(mult, offset, np.array([1, 0, 2, 3], np.int64))
    tvm.ir.assert_structural_equal(X86Requant(kept), kept)


def test_x86_requant_intrinsic_equals_its_description():
    """compile/llvm_cpu/intrin/x86_requant.py: the 16- and 8-lane intrinsics tensorize the block's form and
    compute it exactly (int32 extremes, every shift) on this machine."""
    from tvm import s_tir, te

    from compile.llvm_cpu.rewrites import _x86_requant
    from compile.llvm_cpu.intrin.x86_requant import requant_intrin

    rng = np.random.default_rng(9)
    c = 32
    x = te.placeholder((3, c), "int32", "x")
    consts = [te.placeholder((c,), d, n) for n, d in
              (("m", "int32"), ("k", "int64"), ("n", "int32"), ("s", "int32"))]
    out = _x86_requant(x, *consts)
    values = [rng.integers(-2 ** 31, 2 ** 31, (3, c)).astype(np.int32),
              rng.integers(1, 2 ** 31, c).astype(np.int32),
              rng.integers(-2 ** 45, 2 ** 45, c).astype(np.int64),
              rng.integers(-2 ** 20, 2 ** 20, c).astype(np.int32),
              np.arange(c, dtype=np.int32) % 31]
    values[0][0, :4] = [-2 ** 31, 2 ** 31 - 1, 0, -1]
    xv, mv, kv, nv, sv = values
    high = ((xv.astype(np.int64) * mv + kv) >> 31).astype(np.int32)   # int32 wrap, like TIR
    expected = (high - (xv < nv)) >> sv
    native = tvm.target.Target(resolve_native({"kind": "llvm", "mcpu": "native"}))
    for lanes in (16, 8):
        sch = s_tir.Schedule(te.create_prim_func([x, *consts, out]))
        loop = sch.get_loops(sch.get_sblock(REQUANT_BLOCK))[-1]
        sch.tensorize(sch.split(loop, [None, lanes])[1], requant_intrin(lanes))
        assert 'T.reinterpret("int64x' in sch.mod.script()
        lib = tvm.compile(sch.mod, target=native)
        args = [tvm.runtime.tensor(v) for v in (*values, np.zeros((3, c), np.int32))]
        lib["main"](*args)
        np.testing.assert_array_equal(args[-1].numpy(), expected)


def _rescaled_input(offset, mult, left=20):
    @I.ir_module
    class Module:
        @R.function
        def main(v: R.Tensor((256,), "int8")) -> R.Tensor((256,), "int32"):
            with R.dataflow():
                y = R.subtract(R.astype(v, "int32"), R.const(offset, "int32"))
                wide = R.astype(R.left_shift(y, R.const(left, "int32")), "int64")
                t = R.add(R.multiply(wide, R.const(mult, "int64")), R.const(1 << 30, "int64"))
                out = R.astype(R.right_shift(t, R.const(31, "int64")), "int32")
                R.output(out)
            return out

    return Module


@pytest.mark.parametrize("mult", [1 << 30, 1518500250, 2 ** 31 - 1, 1234567])
def test_small_input_high_mul_is_int32_and_exact_for_every_int8(mult):
    """SmallInputHighMul: a quantized add's input rescale, (int8 - zp) << 20 times M, in
    int32 arithmetic only; equal for all 256 inputs."""
    before = _rescaled_input(-128, mult)
    after = SmallInputHighMul(before)
    assert "int64" not in after.script()
    v = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(_run(after, v), _run(before, v))
    # (v - zp) << 2 times M: y * (M >> 29) no longer fits int32, left alone
    wide = _rescaled_input(-128, 2 ** 31 - 1, left=2)
    tvm.ir.assert_structural_equal(SmallInputHighMul(wide), wide)


def test_vnni_convs_leave_the_offset_to_the_requantization():
    """VnniConvs: a 1x1 conv becomes the VPDPBUSD kernel + a Relax add of -128 * sum(w);
    after FoldBiasIntoRequant and X86Requant the requantization reads the accumulator itself
    (the add folded into its constants), equal to the unrewritten module."""
    rng = np.random.default_rng(13)
    w = rng.integers(-128, 128, (1, 1, 8, 16)).astype(np.int8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 4, 8), "int8"))
    mult = rng.integers(1 << 30, 2 ** 31, 16).astype(np.int64)
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w, "int8"), data_layout="NHWC",
                                             kernel_layout="HWIO", out_dtype="int32"))
            acc = bb.emit(relax.op.add(acc, relax.const(rng.integers(-99, 99, 16).astype(
                np.int32))))
            wide = bb.emit(relax.op.multiply(relax.op.astype(acc, "int64"),
                                             relax.const(mult, "int64")))
            high = bb.emit(relax.op.astype(relax.op.right_shift(
                relax.op.add(wide, relax.const(1 << 30, "int64")), relax.const(31, "int64")),
                "int32"))
            nudged = bb.emit(relax.op.add(relax.op.add(high, relax.op.right_shift(
                high, relax.const(31, "int32"))), relax.const(np.full(16, 4, np.int32))))
            y = bb.emit_output(relax.op.right_shift(nudged, relax.const(3, "int32")))
        bb.emit_func_output(y)
    before = bb.get()
    with tvm.target.Target(VNNI_CPU):
        after = tvm.transform.Sequential([VnniConvs, FoldBiasIntoRequant, X86Requant])(before)
    main = after["main"].script()
    assert main.count("R.call_tir") == 2 and "R.add" not in main, main
    xv = rng.integers(-128, 128, (1, 3, 4, 8)).astype(np.int8)
    np.testing.assert_array_equal(_run(after, xv), _run(before, xv))


def _two_clamps(lo, hi, first=(-128, 127)):
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((512,), "int32")) -> R.Tensor((512,), "int8"):
            with R.dataflow():
                y = R.clip(R.astype(R.clip(x, first[0], first[1]), "int8"), lo, hi)
                R.output(y)
            return y

    return Module


def test_merge_clips_is_one_clamp_before_the_narrowing():
    x = np.arange(-256, 256, dtype=np.int32)
    for lo, hi in ((-9, 127), (-128, 5), (0, 6)):
        before = _two_clamps(lo, hi)
        after = MergeClips(before)
        assert after["main"].script().count("R.clip") == 1
        np.testing.assert_array_equal(_run(after, x), _run(before, x))
    # a first clamp wider than int8 wraps in the cast: left alone
    wrapping = _two_clamps(-9, 127, first=(-300, 300))
    tvm.ir.assert_structural_equal(MergeClips(wrapping), wrapping)
