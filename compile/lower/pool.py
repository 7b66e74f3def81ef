"""LowerQuantizedPool: int8 MEAN and AVERAGE_POOL_2D as TFLite's integer reference kernels.

MEAN (reference_ops::QuantizedMeanOrSum, tflite/kernels/internal/reference/reduce.h):
    (M, e) = QuantizeMultiplier(sx / sy); n = reduced element count
    k = min(floor(log2 n), 32, 31 + e); M' = (M << k) // n; e' = e - k
    y = clamp(MBQM(sum(x) - zx * n, M', e') + zy)
AVERAGE_POOL_2D (reference_integer_ops::AveragePool, integer_ops/pooling.h): input and output share
    quantization; acc = sum of the in-bounds window, c = in-bounds count (padding excluded),
    y = clamp(acc > 0 ? (acc + c/2) / c : (acc - c/2) / c)   (C division truncates).
The importer emits average pooling as astype(int32) -> avg_pool2d -> astype(int8); the window sum
becomes a depthwise convolution with an all-ones kernel, the counts a compile-time constant.
"""

from __future__ import annotations

import numpy as np
from tvm.relax import op as R
from tvm.relax.dpl import is_op, wildcard

from compile.lower.fixedpoint import finish, iconst, multiply_by_quantized_multiplier, qparams
from compile.lower.patterns import QuantizeTail, dequantize, is_int8, rewrite_pass, static_shape
from compile.lower.quant import quantize_multiplier


def _mean_patterns():
    deq, x, sx_p, zx_p = dequantize()
    mean = is_op("relax.mean")(deq)
    tail = QuantizeTail(mean)

    def rewriter(orig, m):
        if not is_int8(m[x]) or tail.out_dtype(m) != "int8":
            return orig
        sx, zx = (v.reshape(-1)[0] for v in qparams(m[sx_p], m[zx_p]))
        sy, zy, lo, hi = tail.output(m)
        call = m.value(mean)
        shape = static_shape(m[x])
        axes = [int(a) % len(shape) for a in call.attrs.axis] if call.attrs.axis is not None \
            else list(range(len(shape)))
        n = int(np.prod([shape[a] for a in axes]))
        mult, shift = quantize_multiplier(np.float64(sx) / np.float64(sy))
        k = min(n.bit_length() - 1, 32, 31 + shift)
        mult = ((mult << k) // n) if k >= 0 else mult  # k < 0 only for absurd scale ratios
        shift -= max(k, 0)
        total = R.sum(R.astype(m[x], "int32"), axis=axes, keepdims=bool(call.attrs.keepdims))
        total = R.subtract(total, iconst(int(zx) * n, "int32"))
        return finish(multiply_by_quantized_multiplier(total, mult, shift, bound=255 * n), zy,
                      lo, hi)

    return [(tail.root, rewriter)]


def _avg_pool_patterns():
    x = wildcard()
    pool = is_op("relax.nn.avg_pool2d")(is_op("relax.astype")(x))
    root = is_op("relax.astype")(pool)

    def rewriter(orig, m):
        call = m.value(pool)
        a = call.attrs
        if not is_int8(m[x]) or str(orig.attrs.dtype) != "int8" or str(a.layout) != "NHWC" \
                or bool(a.ceil_mode) or bool(a.count_include_pad):
            return orig
        n, h, w, c = static_shape(m[x])
        kh, kw = (int(v) for v in a.pool_size)
        top, left, bottom, right = (int(v) for v in a.padding)
        ones = iconst(np.ones((kh, kw, c, 1), np.int8), "int8")
        acc = R.nn.conv2d(m[x], ones,
                          strides=[int(s) for s in a.strides], padding=[top, left, bottom, right],
                          dilation=[int(d) for d in a.dilation], groups=c, data_layout="NHWC",
                          kernel_layout="HWOI", out_dtype="int32")
        counts = _window_counts((h, w), (kh, kw), [int(s) for s in a.strides],
                                [int(d) for d in a.dilation], (top, left, bottom, right),
                                static_shape(orig)[1:3])
        cnt = iconst(counts[None, :, :, None], "int32")
        half = iconst((counts // 2)[None, :, :, None], "int32")
        zero = iconst(0, "int32")
        num = R.where(R.greater(acc, zero), R.add(acc, half), R.subtract(acc, half))
        # C truncating division: sign(num) * (|num| // cnt)
        q = R.floor_divide(R.abs(num), cnt)
        q = R.where(R.less(num, zero), R.negative(q), q)
        return finish(q, 0, -128, 127)

    return [(root, rewriter)]


def _window_counts(in_hw, k_hw, strides, dilation, pad, out_hw):
    """Number of in-bounds taps of each output window (padding excluded)."""
    counts = np.zeros(out_hw, np.int64)
    top, left = pad[0], pad[1]
    for oy in range(out_hw[0]):
        ys = [oy * strides[0] - top + i * dilation[0] for i in range(k_hw[0])]
        ny = sum(0 <= y < in_hw[0] for y in ys)
        for ox in range(out_hw[1]):
            xs = [ox * strides[1] - left + j * dilation[1] for j in range(k_hw[1])]
            counts[oy, ox] = ny * sum(0 <= x < in_hw[1] for x in xs)
    return counts


def _patterns():
    return _mean_patterns() + _avg_pool_patterns()


LowerQuantizedPool = rewrite_pass("LowerQuantizedPool", _patterns)
