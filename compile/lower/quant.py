"""Fixed-point helpers that reproduce TFLite's integer requantization bit for bit.

Spec: https://ai.google.dev/edge/litert/models/quantization_spec ; the arithmetic follows
tensorflow/lite/kernels/internal/quantization_util.cc (QuantizeMultiplier) and
tensorflow/lite/kernels/internal/common.h (MultiplyByQuantizedMultiplier with the default
*double rounding*: SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT).

Compile-time functions work on Python/NumPy numbers; the `np_*` functions are NumPy models of the
run-time integer arithmetic, used by tests and by compile-time table generation.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real ~= m * 2**(shift - 31), m in [2**30, 2**31) (or 0).

    `real` is a double (scales are read as float32 and widened, as TFLite does).
    Returns (m, shift); shift > 0 means a left shift.
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)  # real = q * 2**shift, q in [0.5, 1)
    q_fixed = _round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:  # flush tiny multipliers to zero like TFLite
        return 0, 0
    if shift > 30:  # TFLite clamps huge multipliers
        return (1 << 31) - 1, 30
    return int(q_fixed), int(shift)


def _round_half_away(x: float) -> int:
    """std::round: halfway cases away from zero (Python's round() is half-to-even)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised quantize_multiplier: per-channel arrays (int32 multipliers, int32 shifts)."""
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(np.asarray(reals, np.float64))]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


def quantize_value(value: float, scale: float, zero_point: int) -> int:
    """TFLite's compile-time Quantize(): zero_point + round_half_away(value / scale) (float32 math),
    as used by CalculateActivationRangeQuantized for fused RELU/RELU6 bounds."""
    q = np.float32(value) / np.float32(scale)
    return int(zero_point) + _round_half_away(float(q))


# --- NumPy models of the run-time arithmetic (int64 internally, exact) ----------------------------


def np_srdhm(a, b):
    """SaturatingRoundingDoublingHighMul(a, b) for int32 a, b (b > 0 in practice)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C++ division truncates toward zero
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def np_rounding_divide_by_pot(x, exponent):
    """RoundingDivideByPOT: x / 2**exponent rounded half away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def np_multiply_by_quantized_multiplier(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift), double rounding."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.asarray(x, np.int64) * (np.int64(1) << left)
    return np_rounding_divide_by_pot(np_srdhm(x, multiplier), right)


# --- int8 SOFTMAX (LiteRT reference_ops::Softmax, gemmlowp fixed point) ------------------------
# Input diffs x - max(x) are rescaled to Q5.26 (kScaledDiffIntegerBits = 5), exp() is gemmlowp's
# exp_on_negative_values, the sum is accumulated in Q12.19 and inverted with gemmlowp's
# one_over_one_plus_x_for_x_in_0_1 (Newton-Raphson). Output scale 1/256, zero point -128.

SOFTMAX_DIFF_INT_BITS = 5
SOFTMAX_ACCUM_INT_BITS = 12


def softmax_input_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """PreprocessSoftmaxScaling + CalculateInputRadius: (multiplier, left_shift, diff_min)."""
    real = min(beta * input_scale * (1 << (31 - SOFTMAX_DIFF_INT_BITS)), (1 << 31) - 1.0)
    mult, shift = quantize_multiplier(real)
    radius = ((1 << SOFTMAX_DIFF_INT_BITS) - 1) * (1 << (31 - SOFTMAX_DIFF_INT_BITS)) / (1 << shift)
    return mult, shift, -int(math.floor(radius))


def _sat_shl(x, k):
    """gemmlowp SaturatingRoundingMultiplyByPOT<k> for k > 0 on int32 values."""
    threshold = (1 << (31 - k)) - 1
    x = np.asarray(x, np.int64)
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << k))



def np_exp_on_negative_values(a):
    """gemmlowp exp_on_negative_values: Q5.26 raw a <= 0 -> Q0.31 raw exp(a)."""
    a = np.asarray(a, np.int64)
    frac_bits = 31 - SOFTMAX_DIFF_INT_BITS
    quarter = 1 << (frac_bits - 2)
    a_mod = (a & (quarter - 1)) - quarter
    x = _sat_shl(a_mod, SOFTMAX_DIFF_INT_BITS) + (1 << 28)  # Rescale<0>, then + 1/8
    x2 = np_srdhm(x, x)
    x3 = np_srdhm(x2, x)
    x4 = np_srdhm(x2, x2)
    x4_over_4 = np_rounding_divide_by_pot(x4, 2)
    poly = np_rounding_divide_by_pot(np_srdhm(x4_over_4 + x3, 715827883) + x2, 1)
    result = 1895147668 + np_srdhm(1895147668, x + poly)
    remainder = a_mod - a
    for exponent, multiplier in SOFTMAX_BARREL:
        if SOFTMAX_DIFF_INT_BITS > exponent:
            bit = remainder & (1 << (frac_bits + exponent))
            result = np.where(bit != 0, np_srdhm(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


# gemmlowp exp barrel shifter: (exponent, raw Q0.31 of exp(-2**exponent))
SOFTMAX_BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                  (2, 39332535), (3, 720401), (4, 242)]
