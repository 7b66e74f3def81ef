"""compile/vector_arith.py: the requantization and conv forms LLVM vectorizes on NEON/AVX-512.

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
from compile.vector_arith import (MLA_BLOCK, NEON_SQRDMULH, VNNI_BLOCK, WIDEN_BLOCK,
                                  FoldBiasIntoRequant, NarrowConstants, NeonRequant,
                                  RoundingNudge, conv2d_legalizer, has_vnni, legalize_conv2d,
                                  pack_sdot_weights, pack_vnni_weights)

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
    results = [relax.VirtualMachine(tvm.compile(m, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy() for m in (ours, theirs)]
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
    results = [relax.VirtualMachine(tvm.compile(m, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy() for m in (ours, theirs)]
    np.testing.assert_array_equal(*results)


VNNI_CPU = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"}  # AVX-512 VNNI


@pytest.mark.parametrize("shape", [((1, 5, 6, 8), (1, 1, 8, 32), (1, 1)),    # 16-lane VPDPBUSD
                                   ((1, 5, 5, 12), (1, 1, 12, 8), (2, 2))])  # 8-lane (ymm)
def test_x86_vnni_pointwise_conv_equals_topi(shape):
    """x86 with AVX-512 VNNI: 1x1 convs become uint8 x int8 dot products (input + 128, minus
    128 * sum(w) per channel; -128 weights and inputs included), equal to TVM's own conv --
    legalized only, and compiled with VPDPBUSD when this machine has it."""
    x_shape, w_shape, strides = shape
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    w.flat[0] = -128
    mod = _conv_module(x_shape, w, 1, strides, "HWIO")
    ours = relax.transform.LegalizeOps(
        {"relax.nn.conv2d": conv2d_legalizer(tvm.target.Target(VNNI_CPU))})(mod)
    assert f'"{VNNI_BLOCK}"' in ours.script() and '"uint8"' in ours.script()
    theirs = relax.transform.LegalizeOps()(mod)
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    x.flat[::3] = -128
    modules = [ours, theirs]
    native = tvm.target.Target(resolve_native({"kind": "llvm", "mcpu": "native"}))
    if has_vnni(native):   # the whole host build: default schedules, VPDPBUSD tensorized
        from compile.tuning import compile_relax_module
        built = compile_relax_module(mod, native)
        assert "vpdpbusd" in built.mod.imports[0].inspect_source("asm")
        modules.append(built)
    results = [relax.VirtualMachine(m if isinstance(m, tvm.runtime.Executable)
                                    else tvm.compile(m, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy() for m in modules]
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


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
