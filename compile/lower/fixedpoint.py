"""Relax expression builders for TFLite's integer arithmetic (see compile/lower/quant.py for the spec).

All builders take and return Relax expressions; every constant they create is an integer
constant computed at compile time.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from compile.errors import ModelError
from compile.lower.quant import quantize_multipliers, quantize_value

INT8_MIN, INT8_MAX = -128, 127


def iconst(value, dtype: str) -> relax.Constant:
    """Integer constant (scalar or array)."""
    return relax.const(np.asarray(value).astype(dtype), dtype)


def fits_int32(values: np.ndarray) -> bool:
    """Every value representable as int32 (int64 constants that can be stored narrowed)."""
    return bool(np.all((values >= -2 ** 31) & (values < 2 ** 31)))


def scalar_or_vector(values: np.ndarray) -> np.ndarray:
    """Collapse a per-channel array whose entries are all equal to a scalar."""
    values = np.asarray(values)
    if values.ndim and values.size and np.all(values == values.flat[0]):
        return values.flat[0]
    return values


def const_value(expr) -> np.ndarray:
    """NumPy value of a relax.Constant."""
    return expr.value.numpy()


def qparams(scale_expr, zero_point_expr) -> tuple[np.ndarray, np.ndarray]:
    """(float32 scales, int zero points) of a (de)quantize call's constant arguments."""
    return const_value(scale_expr).astype(np.float32), const_value(zero_point_expr).astype(np.int64)


def multiply_by_quantized_multiplier(x, multiplier, shift, bound: int | None = None):
    """TFLite MultiplyByQuantizedMultiplier on an int32 tensor, double rounding.

    multiplier, shift: int arrays broadcastable along the last axis (or scalars).
    bound: |x| <= bound, when the caller knows it.  A left shift is TFLite's
    ``x * (1 << left)`` in int32: where ``bound`` does not keep it inside int32, TFLite's
    result is undefined (signed overflow in C++) and the model is refused.
    SaturatingRoundingDoublingHighMul(a, m) == (a*m + 2**30) >> 31 (arithmetic shift) for all
    a, m except a == m == INT32_MIN, which cannot happen since m > 0.
    RoundingDivideByPOT(h, e) == (h + 2**(e-1) - (h < 0)) >> e for e >= 1 (half away from zero).
    """
    multiplier = scalar_or_vector(np.asarray(multiplier, np.int64))
    shift = scalar_or_vector(np.asarray(shift, np.int64))
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    wide = R.astype(x, "int64")
    if bound is not None and int(bound) << int(np.max(left)) > 2**31:
        raise ModelError(f"a requantization multiplies by 2^{int(np.max(left))} (its scales' "
                         f"ratio is that large) values up to {int(bound)}: that overflows "
                         "int32, where TFLite's integer result is undefined")
    wide = R.multiply(wide, iconst(multiplier * (np.int64(1) << left), "int64"))
    high = R.right_shift(R.add(wide, iconst(1 << 30, "int64")), iconst(31, "int64"))
    high = R.astype(high, "int32")
    if np.all(right == 0):
        return high
    half = np.where(right > 0, (np.int64(1) << np.maximum(right - 1, 0)), 0)
    nudge = R.where(
        R.less(high, iconst(0, "int32")),
        iconst(half - (right > 0), "int32"),
        iconst(half, "int32"),
    )
    return R.right_shift(R.add(high, nudge), iconst(right, "int32"))


def requantize_output(acc, real_multipliers, out_zero_point: int, lo: int, hi: int, dtype="int8",
                      bound: int | None = None):
    """int32 accumulator (|acc| <= bound) -> output int8: MBQM(acc) + zero point, clamped to
    [lo, hi]."""
    mult, shift = quantize_multipliers(real_multipliers)
    return finish(multiply_by_quantized_multiplier(acc, mult, shift, bound), out_zero_point, lo,
                  hi, dtype)


def finish(x, out_zero_point: int, lo: int, hi: int, dtype="int8"):
    """Add the output zero point, clamp to [lo, hi] and narrow to dtype."""
    if int(out_zero_point) != 0:
        x = R.add(x, iconst(int(out_zero_point), "int32"))
    return R.astype(R.clip(x, int(lo), int(hi)), dtype)


def activation_range(act, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for int8 ('none' | 'relu' | 'relu6' | 'relu1')."""
    q = lambda v: quantize_value(v, scale, zero_point)  # noqa: E731
    if act == "relu":
        return max(INT8_MIN, q(0.0)), INT8_MAX
    if act == "relu6":
        return max(INT8_MIN, q(0.0)), min(INT8_MAX, q(6.0))
    if act == "relu1":
        return max(INT8_MIN, q(-1.0)), min(INT8_MAX, q(1.0))
    return INT8_MIN, INT8_MAX


def round_multiply_double(acc, scales):
    """int32 acc -> int32 round_half_away(acc * scale) exactly, `scale` a positive double.

    LiteRT's *reference* FULLY_CONNECTED kernels requantize with doubles
    (`round(double(acc) * (double(sx) * sw / sy))`, reference_integer_ops/fully_connected.h), not
    with MultiplyByQuantizedMultiplier. Each scale is an exact double m * 2**-q (m < 2**53); the
    product is evaluated exactly in int64 by splitting m = mh * 2**26 + ml:
        floor(|acc| * m / 2**q + 1/2) = (|acc|*mh + (|acc|*ml >> 26) + 2**(q-27)) >> (q - 26)
    (exact for |acc| < 2**31 and 27 <= q <= 84).
    """
    mh, ml, q = double_scale_parts(scales)
    a = R.abs(R.astype(acc, "int64"))
    total = R.add(R.multiply(a, iconst(mh, "int64")),
                  R.right_shift(R.multiply(a, iconst(ml, "int64")), iconst(26, "int64")))
    total = R.add(total, iconst(np.int64(1) << (q - 27), "int64"))
    r = R.astype(R.right_shift(total, iconst(q - 26, "int64")), "int32")
    return R.where(R.less(acc, iconst(0, "int32")), R.negative(r), r)


def double_scale_parts(scales):
    """(mh, ml, q) with scale == (mh * 2**26 + ml) * 2**-q exactly; scalars when uniform."""
    mh, ml, q = [], [], []
    for s in np.atleast_1d(np.asarray(scales, np.float64)):
        mant, exp = np.frexp(s)  # s = mant * 2**exp, mant in [0.5, 1)
        m = int(mant * (1 << 53))  # exact: 53-bit significand
        qq = 53 - int(exp)
        if qq > 84:   # |acc| * scale < 2**31 * 2**-32: every result rounds to 0
            m, qq = 0, 27   # (0 + 1) >> 1: small constants for the simplifier
        if qq < 27:
            raise ModelError(f"a fully connected layer's requantization scale (input scale "
                             f"x weight scale / output scale) is {s:g}, not one of the "
                             f"scales below 2^26 we compute exactly")
        mh.append(m >> 26)
        ml.append(m & ((1 << 26) - 1))
        q.append(qq)
    return tuple(scalar_or_vector(np.array(v, np.int64)) for v in (mh, ml, q))
