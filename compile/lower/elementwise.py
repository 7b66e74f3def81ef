"""LowerQuantizedElementwise: int8 ADD / SUB / MUL as TFLite's integer reference kernels.

ADD / SUB (tflite/kernels/add.cc, sub.cc Prepare; reference_integer_ops/add.h):
    left_shift = 20, twice_max = 2 * max(s1, s2)
    (M1, e1) = QuantizeMultiplier(s1 / twice_max), (M2, e2) likewise,
    (Mo, eo) = QuantizeMultiplier(twice_max / (2**20 * sy))
    y = clamp(MBQM(MBQM((x1 - z1) << 20, M1, e1) +- MBQM((x2 - z2) << 20, M2, e2), Mo, eo) + zy)
MUL (mul.cc, reference_integer_ops/mul.h):
    (M, e) = QuantizeMultiplier(s1 * s2 / sy)
    y = clamp(MBQM((x1 - z1) * (x2 - z2), M, e) + zy)
"""

from __future__ import annotations

import numpy as np
from tvm.relax import op as R
from tvm.relax.dpl import is_op

from compile.lower.fixedpoint import (
    finish,
    iconst,
    multiply_by_quantized_multiplier,
    qparams,
    requantize_output,
)
from compile.lower.patterns import QuantizeTail, dequantize, is_int8, rewrite_pass
from compile.lower.quant import quantize_multiplier

ADD_LEFT_SHIFT = 20  # int8 (15 for int16)


def _offset(x, zp: int):
    """int32(x) - zp."""
    x = R.astype(x, "int32")
    return R.subtract(x, iconst(zp, "int32")) if zp else x


def _patterns():
    out = []
    for op_name in ("relax.add", "relax.subtract", "relax.multiply"):
        d1, x1, s1, z1 = dequantize()
        d2, x2, s2, z2 = dequantize()
        tail = QuantizeTail(is_op(op_name)(d1, d2))

        def rewriter(orig, m, op_name=op_name, x1=x1, x2=x2, s1=s1, z1=z1, s2=s2, z2=z2, tail=tail):
            if not (is_int8(m[x1]) and is_int8(m[x2])) or tail.out_dtype(m) != "int8":
                return orig
            sa, za = (float(v.reshape(-1)[0]) if i == 0 else int(v.reshape(-1)[0])
                      for i, v in enumerate(qparams(m[s1], m[z1])))
            sb, zb = (float(v.reshape(-1)[0]) if i == 0 else int(v.reshape(-1)[0])
                      for i, v in enumerate(qparams(m[s2], m[z2])))
            sy, zy, lo, hi = tail.output(m)
            a, b = _offset(m[x1], za), _offset(m[x2], zb)
            if op_name == "relax.multiply":
                real = np.float64(sa) * np.float64(sb) / np.float64(sy)
                return requantize_output(R.multiply(a, b), real, zy, lo, hi, bound=255 * 255)
            twice_max = 2.0 * max(np.float64(sa), np.float64(sb))
            shift = iconst(ADD_LEFT_SHIFT, "int32")
            a = _scale(R.left_shift(a, shift), np.float64(sa) / twice_max)
            b = _scale(R.left_shift(b, shift), np.float64(sb) / twice_max)
            raw = R.add(a, b) if op_name == "relax.add" else R.subtract(a, b)
            mo, eo = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * np.float64(sy)))
            # |a|, |b| <= 255 << 20 scaled by at most 1/2 each
            return finish(multiply_by_quantized_multiplier(raw, mo, eo, bound=255 << 20), zy,
                          lo, hi)

        out.append((tail.root, rewriter))
    return out


def _scale(x, real: float):
    m, e = quantize_multiplier(real)
    return multiply_by_quantized_multiplier(x, m, e)


LowerQuantizedElementwise = rewrite_pass("LowerQuantizedElementwise", _patterns)
