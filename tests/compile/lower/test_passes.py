"""Before/Expected tests for each integer-lowering pass (compile/lower/*.py).

Scales are powers of two so that every multiplier is checkable by hand:
QuantizeMultiplier(2**k) = (2**30, k + 1), i.e. real = 2**30 * 2**(k+1) / 2**31.
"""

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from compile.lower import (
    FoldRequantize,
    IntegerClipBounds,
    LowerQuantizedConcat,
    LowerQuantizedConv,
    LowerQuantizedElementwise,
    LowerQuantizedPool,
    LowerQuantizedSoftmax,
)
from compile.lower.softmax import softmax_tables

W = np.arange(-9, 9, dtype=np.int8).reshape(3, 3, 2, 1)  # HWIO, one output channel
B = np.array([10], np.int32)


def test_conv_pads_with_zero_point_and_folds_weight_sum():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 4, 2), "int8")) -> R.Tensor((1, 4, 4, 1), "int8"):
            with R.dataflow():
                a = R.dequantize(x, R.const(0.5, "float32"), R.const(1, "int32"), axis=0)
                w = R.dequantize(R.const(W, "int8"), R.const(0.25, "float32"), R.const(0, "int32"),
                                 axis=3)
                c = R.nn.conv2d(a, w, padding=[1, 1, 1, 1], data_layout="NHWC",
                                kernel_layout="HWIO")
                b = R.dequantize(R.const(B, "int32"), R.const(0.125, "float32"),
                                 R.const(0, "int32"), axis=0)
                y = R.quantize(R.add(c, b), R.const(0.5, "float32"), R.const(-3, "int32"), axis=0)
                R.output(y)
            return y

    # bias - zx * sum(w) = 10 - 1 * (-9) = 19; multiplier 0.5 * 0.25 / 0.5 = 2**-2 -> (2**30, -1)
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4, 4, 2), "int8")) -> R.Tensor((1, 4, 4, 1), "int8"):
            with R.dataflow():
                p = R.nn.pad(x, pad_width=[0, 0, 1, 1, 1, 1, 0, 0], pad_value=1.0)
                c = R.nn.conv2d(p, R.const(W, "int8"), padding=[0, 0, 0, 0], data_layout="NHWC",
                                kernel_layout="HWIO", out_dtype="int32")
                acc = R.add(c, R.const(np.array([19], np.int32), "int32"))
                wide = R.multiply(R.astype(acc, "int64"), R.const(2**30, "int64"))
                high = R.right_shift(R.add(wide, R.const(2**30, "int64")), R.const(31, "int64"))
                h = R.astype(high, "int32")
                nudge = R.where(R.less(h, R.const(0, "int32")), R.const(0, "int32"),
                                R.const(1, "int32"))
                r = R.right_shift(R.add(h, nudge), R.const(1, "int32"))
                y = R.astype(R.clip(R.add(r, R.const(-3, "int32")), -128, 127), "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerQuantizedConv(Before), Expected)


FC = np.array([[1, -2, 3], [4, 5, -6]], np.int8)  # TFLite [out, in]


def test_fully_connected_rounds_like_the_double_reference():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3), "int8")) -> R.Tensor((1, 2), "int8"):
            with R.dataflow():
                a = R.dequantize(x, R.const(0.5, "float32"), R.const(0, "int32"), axis=0)
                wt = R.permute_dims(R.const(FC, "int8"), axes=[1, 0])
                w = R.dequantize(wt, R.const(0.25, "float32"), R.const(0, "int32"), axis=1)
                y = R.quantize(R.matmul(a, w), R.const(0.5, "float32"), R.const(0, "int32"),
                               axis=0)
                R.output(y)
            return y

    # round(acc * 2**-2): 2**-2 = 2**52 * 2**-54 -> mh = 2**26, ml = 0, q = 54
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3), "int8")) -> R.Tensor((1, 2), "int8"):
            with R.dataflow():
                acc = R.add(R.matmul(x, R.const(FC.T.copy(), "int8"), out_dtype="int32"),
                            R.const(np.zeros(2, np.int32), "int32"))
                negative = R.less(acc, R.const(0, "int32"))
                a = R.abs(R.astype(acc, "int64"))
                t = R.add(R.multiply(a, R.const(2**26, "int64")),
                          R.right_shift(R.multiply(a, R.const(0, "int64")), R.const(26, "int64")))
                t = R.add(t, R.const(2**27, "int64"))
                r = R.astype(R.right_shift(t, R.const(28, "int64")), "int32")
                r = R.where(negative, R.negative(r), r)
                y = R.astype(R.clip(r, -128, 127), "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerQuantizedConv(Before), Expected)


def test_add_uses_left_shift_20_and_per_input_multipliers():
    # s1 = s2 = 2**-3: input multipliers s / (2 * max) = 1/2 -> (2**30, 0);
    # output 2 * 2**-3 / (2**20 * 2**-21) = 1/2 -> (2**30, 0): no rounding shifts at all.
    @I.ir_module
    class Before:
        @R.function
        def main(x1: R.Tensor((1, 4), "int8"), x2: R.Tensor((1, 4), "int8")) -> R.Tensor((1, 4), "int8"):
            with R.dataflow():
                a = R.dequantize(x1, R.const(0.125, "float32"), R.const(2, "int32"), axis=0)
                b = R.dequantize(x2, R.const(0.125, "float32"), R.const(0, "int32"), axis=0)
                y = R.quantize(R.nn.relu(R.add(a, b)), R.const(2.0**-21, "float32"),
                               R.const(-1, "int32"), axis=0)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x1: R.Tensor((1, 4), "int8"), x2: R.Tensor((1, 4), "int8")) -> R.Tensor((1, 4), "int8"):
            with R.dataflow():
                a = R.subtract(R.astype(x1, "int32"), R.const(2, "int32"))
                a = R.left_shift(a, R.const(20, "int32"))
                a = R.multiply(R.astype(a, "int64"), R.const(2**30, "int64"))
                a = R.astype(R.right_shift(R.add(a, R.const(2**30, "int64")), R.const(31, "int64")),
                             "int32")
                b = R.left_shift(R.astype(x2, "int32"), R.const(20, "int32"))
                b = R.multiply(R.astype(b, "int64"), R.const(2**30, "int64"))
                b = R.astype(R.right_shift(R.add(b, R.const(2**30, "int64")), R.const(31, "int64")),
                             "int32")
                s = R.multiply(R.astype(R.add(a, b), "int64"), R.const(2**30, "int64"))
                s = R.astype(R.right_shift(R.add(s, R.const(2**30, "int64")), R.const(31, "int64")),
                             "int32")
                # fused RELU: the clamp starts at the output zero point
                y = R.astype(R.clip(R.add(s, R.const(-1, "int32")), -1, 127), "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerQuantizedElementwise(Before), Expected)


def test_mean_folds_the_element_count_into_the_multiplier():
    # sx / sy = 1 -> (2**30, 1); n = 4 -> k = 2, M' = (2**30 << 2) // 4 = 2**30, shift' = -1
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 2, 3), "int8")) -> R.Tensor((1, 3), "int8"):
            with R.dataflow():
                a = R.dequantize(x, R.const(0.5, "float32"), R.const(4, "int32"), axis=0)
                y = R.quantize(R.mean(a, axis=[1, 2]), R.const(0.5, "float32"),
                               R.const(4, "int32"), axis=0)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 2, 3), "int8")) -> R.Tensor((1, 3), "int8"):
            with R.dataflow():
                t = R.sum(R.astype(x, "int32"), axis=[1, 2], keepdims=False)
                t = R.subtract(t, R.const(16, "int32"))
                wide = R.multiply(R.astype(t, "int64"), R.const(2**30, "int64"))
                h = R.astype(R.right_shift(R.add(wide, R.const(2**30, "int64")),
                                           R.const(31, "int64")), "int32")
                nudge = R.where(R.less(h, R.const(0, "int32")), R.const(0, "int32"),
                                R.const(1, "int32"))
                r = R.right_shift(R.add(h, nudge), R.const(1, "int32"))
                y = R.astype(R.clip(R.add(r, R.const(4, "int32")), -128, 127), "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerQuantizedPool(Before), Expected)


ONES = np.ones((2, 2, 1, 1), np.int8)
COUNTS = np.array([[4, 2], [2, 1]], np.int32)[None, :, :, None]  # 3x3 input, 2x2 window, pad 1


def test_average_pool_rounds_half_away_over_in_bounds_taps():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 3, 1), "int8")) -> R.Tensor((1, 2, 2, 1), "int8"):
            with R.dataflow():
                p = R.nn.avg_pool2d(R.astype(x, "int32"), pool_size=[2, 2], strides=[2, 2],
                                    padding=[0, 0, 1, 1], layout="NHWC")
                y = R.astype(p, "int8")
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 3, 1), "int8")) -> R.Tensor((1, 2, 2, 1), "int8"):
            with R.dataflow():
                acc = R.nn.conv2d(x, R.const(ONES, "int8"), strides=[2, 2], padding=[0, 0, 1, 1],
                                  groups=1, data_layout="NHWC", kernel_layout="HWOI",
                                  out_dtype="int32")
                positive = R.greater(acc, R.const(0, "int32"))
                num = R.where(positive, R.add(acc, R.const(COUNTS // 2, "int32")),
                              R.subtract(acc, R.const(COUNTS // 2, "int32")))
                negative = R.less(num, R.const(0, "int32"))
                q = R.floor_divide(R.abs(num), R.const(COUNTS, "int32"))
                q = R.where(negative, R.negative(q), q)
                y = R.astype(R.clip(q, -128, 127), "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerQuantizedPool(Before), Expected)


def test_concat_of_same_scale_inputs_is_an_integer_concat():
    @I.ir_module
    class Before:
        @R.function
        def main(x1: R.Tensor((1, 2), "int8"), x2: R.Tensor((1, 3), "int8")) -> R.Tensor((1, 5), "int8"):
            with R.dataflow():
                a = R.dequantize(x1, R.const(0.5, "float32"), R.const(3, "int32"), axis=0)
                b = R.dequantize(x2, R.const(0.5, "float32"), R.const(3, "int32"), axis=0)
                y = R.quantize(R.concat((a, b), axis=1), R.const(0.5, "float32"),
                               R.const(3, "int32"), axis=0)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x1: R.Tensor((1, 2), "int8"), x2: R.Tensor((1, 3), "int8")) -> R.Tensor((1, 5), "int8"):
            with R.dataflow():
                y = R.concat((x1, x2), axis=1)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerQuantizedConcat(Before), Expected)


def test_requantize_between_scales_and_identity_pairs():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "int8")) -> R.Tensor((4,), "int8"):
            with R.dataflow():
                a = R.dequantize(x, R.const(0.5, "float32"), R.const(1, "int32"), axis=0)
                q = R.quantize(a, R.const(0.5, "float32"), R.const(1, "int32"), axis=0)
                b = R.dequantize(q, R.const(0.5, "float32"), R.const(1, "int32"), axis=0)
                y = R.quantize(b, R.const(0.25, "float32"), R.const(0, "int32"), axis=0)
                R.output(y)
            return y

    # 0.5 / 0.25 = 2 -> (2**30, 2): a left shift by 2 folded into the int64 multiplier
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), "int8")) -> R.Tensor((4,), "int8"):
            with R.dataflow():
                d = R.subtract(R.astype(x, "int32"), R.const(1, "int32"))
                wide = R.multiply(R.astype(d, "int64"), R.const(2**32, "int64"))
                h = R.astype(R.right_shift(R.add(wide, R.const(2**30, "int64")),
                                           R.const(31, "int64")), "int32")
                y = R.astype(R.clip(h, -128, 127), "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldRequantize(Before), Expected)


def test_clip_on_integers_gets_integer_bounds():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "int8")) -> R.Tensor((4,), "int8"):
            with R.dataflow():
                y = R.clip(x, R.prim_value(-7.0), R.prim_value(127.0))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), "int8")) -> R.Tensor((4,), "int8"):
            with R.dataflow():
                y = R.clip(x, -7, 127)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(IntegerClipBounds(Before), Expected)


def test_softmax_is_gemmlowp_fixed_point_with_exp_tables():
    # input scale 1/4: exp tables indexed by x - max(x) + 255 (compile.lower.quant models them)
    exp_table, term_table = softmax_tables(0.25)
    powers = (np.int64(1) << np.arange(1, 31, dtype=np.int64))

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4), "int8")) -> R.Tensor((1, 4), "int8"):
            with R.dataflow():
                a = R.dequantize(x, R.const(0.25, "float32"), R.const(3, "int32"), axis=0)
                y = R.quantize(R.nn.softmax(a, axis=-1), R.const(1.0 / 256, "float32"),
                               R.const(-128, "int32"), axis=0)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "int8")) -> R.Tensor((1, 4), "int8"):
            with R.dataflow():
                diff = R.subtract(R.astype(x, "int32"),
                                  R.astype(R.max(x, axis=[-1], keepdims=True), "int32"))
                index = R.add(diff, R.const(255, "int32"))
                terms = R.take(R.const(term_table, "int32"), index, axis=0, mode="clip")
                total = R.astype(R.sum(terms, axis=[-1], keepdims=True), "int64")
                log2 = R.sum(R.astype(R.greater_equal(total, R.const(powers, "int64")), "int64"),
                             axis=[-1], keepdims=True)
                headroom = R.subtract(R.const(31, "int64"), log2)
                t = R.subtract(R.left_shift(total, headroom), R.const(2**31, "int64"))
                # one_over_one_plus_x_for_x_in_0_1: half denominator, then 3 Newton steps
                hd = R.right_shift(R.add(t, R.const(2**31, "int64")), R.const(1, "int64"))
                z = R.right_shift(R.add(R.multiply(hd, R.const(-1010580540, "int64")),
                                        R.const(2**30, "int64")), R.const(31, "int64"))
                x0 = R.add(R.const(1515870810, "int64"), z)
                # step 1
                p = R.right_shift(R.add(R.multiply(hd, x0), R.const(2**30, "int64")),
                                  R.const(31, "int64"))
                om = R.subtract(R.const(2**29, "int64"), p)
                q = R.right_shift(R.add(R.multiply(x0, om), R.const(2**30, "int64")),
                                  R.const(31, "int64"))
                hi = R.greater(q, R.const(2**29 - 1, "int64"))
                lo = R.less(q, R.const(1 - 2**29, "int64"))
                s = R.where(hi, R.const(2**31 - 1, "int64"),
                            R.where(lo, R.const(-(2**31), "int64"),
                                    R.left_shift(q, R.const(2, "int64"))))
                x1 = R.astype(R.astype(R.add(x0, s), "int32"), "int64")
                # step 2
                p = R.right_shift(R.add(R.multiply(hd, x1), R.const(2**30, "int64")),
                                  R.const(31, "int64"))
                om = R.subtract(R.const(2**29, "int64"), p)
                q = R.right_shift(R.add(R.multiply(x1, om), R.const(2**30, "int64")),
                                  R.const(31, "int64"))
                hi = R.greater(q, R.const(2**29 - 1, "int64"))
                lo = R.less(q, R.const(1 - 2**29, "int64"))
                s = R.where(hi, R.const(2**31 - 1, "int64"),
                            R.where(lo, R.const(-(2**31), "int64"),
                                    R.left_shift(q, R.const(2, "int64"))))
                x2 = R.astype(R.astype(R.add(x1, s), "int32"), "int64")
                # step 3
                p = R.right_shift(R.add(R.multiply(hd, x2), R.const(2**30, "int64")),
                                  R.const(31, "int64"))
                om = R.subtract(R.const(2**29, "int64"), p)
                q = R.right_shift(R.add(R.multiply(x2, om), R.const(2**30, "int64")),
                                  R.const(31, "int64"))
                hi = R.greater(q, R.const(2**29 - 1, "int64"))
                lo = R.less(q, R.const(1 - 2**29, "int64"))
                s = R.where(hi, R.const(2**31 - 1, "int64"),
                            R.where(lo, R.const(-(2**31), "int64"),
                                    R.left_shift(q, R.const(2, "int64"))))
                x3 = R.astype(R.astype(R.add(x2, s), "int32"), "int64")
                # Rescale<0>(ExactMulByPot<-1>(x)): saturating doubling
                hi = R.greater(x3, R.const(2**30 - 1, "int64"))
                lo = R.less(x3, R.const(1 - 2**30, "int64"))
                scale = R.where(hi, R.const(2**31 - 1, "int64"),
                                R.where(lo, R.const(-(2**31), "int64"),
                                        R.left_shift(x3, R.const(1, "int64"))))
                exp = R.astype(R.take(R.const(exp_table, "int32"), index, axis=0, mode="clip"),
                               "int64")
                prod = R.right_shift(R.add(R.multiply(scale, exp), R.const(2**30, "int64")),
                                     R.const(31, "int64"))
                exponent = R.subtract(R.const(35, "int64"), headroom)
                nudge = R.subtract(
                    R.left_shift(R.const(1, "int64"), R.subtract(exponent, R.const(1, "int64"))),
                    R.astype(R.less(prod, R.const(0, "int64")), "int64"))
                out = R.subtract(R.right_shift(R.add(prod, nudge), exponent),
                                 R.const(128, "int64"))
                y = R.astype(R.clip(out, -128, 127), "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerQuantizedSoftmax(Before), Expected)
