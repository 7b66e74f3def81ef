"""Quantize/dequantize pairs around integer-exact operators, and integer clip bounds.

LowerQuantizedConcat: quantize(concat(dequantize(x_i, s_i, z_i)...), s, z) -> concat(x_i) when
    every input shares the output quantization (LiteRT's int8 CONCATENATION requires it); other
    inputs are requantized first (see FoldRequantize).
FoldRequantize: quantize(dequantize(x, s1, z1), s2, z2) -> x when (s1, z1) == (s2, z2), else TFLite's
    integer REQUANTIZE: clamp(MBQM(x - z1, QuantizeMultiplier(s1 / s2)) + z2).
IntegerClipBounds: R.clip on an integer tensor with float bounds (fused activations as emitted by
    the importer) -> the same clip with integer bounds.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.relax import op as R
from tvm.relax.dpl import is_const, is_op, is_tuple, wildcard

from compile.lower.fixedpoint import iconst, qparams, requantize_output
from compile.lower.patterns import dequantize, is_int8, rewrite_pass

MAX_CONCAT_INPUTS = 16


def _params(m, s, z):
    scale, zp = qparams(m[s], m[z])
    return float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])


def _requantize(x, src, dst):
    """int8 x with params src=(scale, zp) as int8 with params dst."""
    if src == dst:
        return x
    acc = R.subtract(R.astype(x, "int32"), iconst(src[1], "int32"))
    return requantize_output(acc, np.float64(src[0]) / np.float64(dst[0]), dst[1], -128, 127,
                             bound=255)   # int8 minus an int8 zero point


def _concat_patterns():
    out = []
    for n in range(2, MAX_CONCAT_INPUTS + 1):
        deqs = [dequantize() for _ in range(n)]
        concat = is_op("relax.concat")(is_tuple([d[0] for d in deqs]))
        s, z = is_const(), is_const()
        root = is_op("relax.quantize")(concat, s, z)

        def rewriter(orig, m, deqs=deqs, concat=concat, s=s, z=z):
            xs = [m[d[1]] for d in deqs]
            if not all(is_int8(x) for x in xs) or str(orig.attrs.out_dtype) != "int8":
                return orig
            dst = _params(m, s, z)
            parts = [_requantize(m[d[1]], _params(m, d[2], d[3]), dst) for d in deqs]
            return R.concat(parts, axis=int(m.value(concat).attrs.axis))

        out.append((root, rewriter))
    return out


def _requantize_patterns():
    deq, x, s1, z1 = dequantize()
    s2, z2 = is_const(), is_const()
    root = is_op("relax.quantize")(deq, s2, z2)

    def rewriter(orig, m):
        if not is_int8(m[x]) or str(orig.attrs.out_dtype) != "int8":
            return orig
        return _requantize(m[x], _params(m, s1, z1), _params(m, s2, z2))

    return [(root, rewriter)]


def _clip_patterns():
    x = wildcard()
    root = is_op("relax.clip")(x, wildcard(), wildcard())

    def rewriter(orig, m):
        dtype = str(m[x].ty.dtype)
        lo, hi = orig.args[1], orig.args[2]
        if not dtype.startswith(("int", "uint")) or not any(
            isinstance(b, tvm.tirx.FloatImm) for b in (lo, hi)
        ):
            return orig
        return R.clip(m[x], int(np.ceil(lo.value)), int(np.floor(hi.value)))

    return [(root, rewriter)]


LowerQuantizedConcat = rewrite_pass("LowerQuantizedConcat", _concat_patterns)
FoldRequantize = rewrite_pass("FoldRequantize", _requantize_patterns)
IntegerClipBounds = rewrite_pass("IntegerClipBounds", _clip_patterns)

__all__ = ["LowerQuantizedConcat", "FoldRequantize", "IntegerClipBounds"]
