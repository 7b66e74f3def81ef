"""LowerQuantizedSoftmax: int8 SOFTMAX as LiteRT's reference kernel (gemmlowp fixed point).

reference_ops::Softmax (tflite/kernels/internal/reference/softmax.h), output scale 1/256, zero
point -128, beta = 1 (the Relax importer drops beta):
    d = x - max(x) in [-255, 0]; exp(d) is gemmlowp's exp_on_negative_values of d rescaled to Q5.26,
    0 when d < diff_min. Since d takes 256 values, exp(d) and its Q12.19 accumulation term are
    compile-time tables (compile/lower/quant.py models them) looked up with `take`.
    At run time: sum the terms, 1/sum with gemmlowp's one_over_one_plus_x_for_x_in_0_1
    (Newton-Raphson, three steps), then out = RoundingDivideByPOT(SRDHM(1/sum, exp), 35 - clz(sum))
    - 128, clamped. Every SRDHM is (a*b + 2**30) >> 31 in int64 (see fixedpoint.py).
"""

from __future__ import annotations

import numpy as np
from tvm.relax import op as R
from tvm.relax.dpl import is_const, is_op

from compile.lower.fixedpoint import iconst, qparams
from compile.lower.patterns import dequantize, is_int8, rewrite_pass
from compile.lower.quant import (
    INT32_MAX,
    INT32_MIN,
    SOFTMAX_ACCUM_INT_BITS,
    np_exp_on_negative_values,
    np_rounding_divide_by_pot,
    np_srdhm,
    softmax_input_params,
)


def softmax_tables(input_scale: float, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(exp, accumulation term) for d = index - 255, as int32 tables of 256 entries."""
    mult, shift, diff_min = softmax_input_params(beta, input_scale)
    d = np.arange(-255, 1, dtype=np.int64)
    exp = np_exp_on_negative_values(np_srdhm(d * (1 << shift), mult))
    exp = np.where(d >= diff_min, exp, 0)  # skipped diffs: no sum term, output -128
    term = np_rounding_divide_by_pot(exp, SOFTMAX_ACCUM_INT_BITS)
    return exp.astype(np.int32), term.astype(np.int32)


def _c64(v):
    return iconst(v, "int64")


def _srdhm(a, b):
    """SaturatingRoundingDoublingHighMul on int64-held int32 values."""
    return R.right_shift(R.add(R.multiply(a, b), _c64(1 << 30)), _c64(31))


def _sat_shl(x, k: int):
    """gemmlowp SaturatingRoundingMultiplyByPOT<k>, k > 0."""
    threshold = (1 << (31 - k)) - 1
    shifted = R.left_shift(x, _c64(k))
    shifted = R.where(R.less(x, _c64(-threshold)), _c64(INT32_MIN), shifted)
    return R.where(R.greater(x, _c64(threshold)), _c64(INT32_MAX), shifted)


def _wrap32(x):
    return R.astype(R.astype(x, "int32"), "int64")


def _one_over_one_plus_x(t):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1 on Q0.31 raw values t in [0, 2**31)."""
    half_den = R.right_shift(R.add(t, _c64(1 << 31)), _c64(1))
    x = R.add(_c64(1515870810), _srdhm(half_den, _c64(-1010580540)))
    for _ in range(3):
        one_minus = R.subtract(_c64(1 << 29), _srdhm(half_den, x))
        x = _wrap32(R.add(x, _sat_shl(_srdhm(x, one_minus), 2)))
    return _sat_shl(x, 1)


def _patterns():
    deq, x, sx_p, zx_p = dequantize()
    softmax = is_op("relax.nn.softmax")(deq)
    s, z = is_const(), is_const()
    root = is_op("relax.quantize")(softmax, s, z)

    def rewriter(orig, m):
        sy, zy = qparams(m[s], m[z])
        axis = int(m.value(softmax).attrs.axis)
        ndim = len(m[x].ty.shape.values)
        if (not is_int8(m[x]) or str(orig.attrs.out_dtype) != "int8" or axis not in (-1, ndim - 1)
                or float(sy.reshape(-1)[0]) != 1.0 / 256 or int(zy.reshape(-1)[0]) != -128):
            return orig
        sx, _ = qparams(m[sx_p], m[zx_p])
        exp_table, term_table = softmax_tables(float(sx.reshape(-1)[0]))
        data = R.astype(m[x], "int32")
        index = R.add(R.subtract(data, R.astype(R.max(m[x], axis=-1, keepdims=True), "int32")),
                      iconst(255, "int32"))
        exp = R.astype(R.take(iconst(exp_table, "int32"), index, axis=0, mode="clip"), "int64")
        total = R.sum(R.take(iconst(term_table, "int32"), index, axis=0, mode="clip"), axis=-1, keepdims=True)
        total = R.astype(total, "int64")
        # floor(log2(total)) by counting powers of two <= total (total >= 2**19 > 0)
        powers = _c64(np.int64(1) << np.arange(1, 31, dtype=np.int64))
        log2 = R.sum(R.astype(R.greater_equal(total, powers), "int64"), axis=-1, keepdims=True)
        headroom = R.subtract(_c64(31), log2)  # CountLeadingZeros(total)
        scale = _one_over_one_plus_x(R.subtract(R.left_shift(total, headroom), _c64(1 << 31)))
        exponent = R.subtract(_c64(SOFTMAX_ACCUM_INT_BITS + 31 - 8), headroom)
        prod = _srdhm(scale, exp)
        nudge = R.subtract(R.left_shift(_c64(1), R.subtract(exponent, _c64(1))),
                           R.astype(R.less(prod, _c64(0)), "int64"))
        out = R.subtract(R.right_shift(R.add(prod, nudge), exponent), _c64(128))
        return R.astype(R.clip(out, -128, 127), "int8")

    return [(root, rewriter)]


LowerQuantizedSoftmax = rewrite_pass("LowerQuantizedSoftmax", _patterns)
