"""Shared dataflow patterns and the helper that turns a (pattern, rewriter) pair into a pass.

Patterns match what `tvm.relax.frontend.tflite.from_tflite` emits for an int8 TFLite operator:
`R.quantize(<float op>(R.dequantize(x, scale, zp), ...), scale, zp)`, optionally with the fused
activation (R.nn.relu / R.clip) in float between the op and the quantize.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.lower.fixedpoint import activation_range, qparams


def dequantize(data=None):
    """dequantize(data, const scale, const zero point) -> (pattern, data, scale, zp)."""
    data = wildcard() if data is None else data
    scale, zp = is_const(), is_const()
    return is_op("relax.dequantize")(data, scale, zp), data, scale, zp


class QuantizeTail:
    """`[relu | clip] -> quantize` around a float result pattern `body`."""

    def __init__(self, body):
        self.body = body
        self.relu = is_op("relax.nn.relu")(body)
        self.clip = is_op("relax.clip")(body, wildcard(), wildcard())
        self.scale, self.zp = is_const(), is_const()
        self.root = is_op("relax.quantize")(body | self.relu | self.clip, self.scale, self.zp)

    def output(self, m) -> tuple[float, int, int, int]:
        """(output scale, output zero point, clamp lo, clamp hi) for a match `m`."""
        scale, zp = qparams(m[self.scale], m[self.zp])
        scale, zp = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
        act = "none"
        if self.relu in m:
            act = "relu"
        elif self.clip in m:
            lo, hi = (float(a.value) for a in m.value(self.clip).args[1:])
            act = {(0.0, 6.0): "relu6", (-1.0, 1.0): "relu1"}.get((lo, hi))
            if act is None:
                raise NotLowered(f"clip [{lo}, {hi}] before quantize is no fused activation")
        lo, hi = activation_range(act, scale, zp)
        return scale, zp, lo, hi

    def out_dtype(self, m) -> str:
        return str(m.value(self.root).attrs.out_dtype)


class NotLowered(Exception):
    """Raised by a rewriter (or its helpers) to leave a match as it is."""


def rewrite_pass(name: str, make_patterns):
    """A relax function pass applying `rewrite_call` for each (pattern, rewriter) pair.

    make_patterns() -> list of (pattern, rewriter(orig, Match) -> Expr); a rewriter returns
    `orig` (or raises NotLowered) to leave a match alone.
    """

    @relax.transform.function_pass(opt_level=0, name=name)
    def _pass(func, mod, ctx):  # noqa: ARG001
        for pattern, rewriter in make_patterns():
            var2val = relax.analysis.get_var2val(func)

            def apply(orig, matchings, rewriter=rewriter, var2val=var2val):
                try:
                    return rewriter(orig, Match(matchings, var2val))
                except NotLowered:
                    return orig

            func = relax.dpl.rewrite_call(pattern, apply, func)
        return func

    return _pass


class Match:
    """Matchings of one rewrite: m[p] is the matched expression (a Var or a Constant),
    m.value(p) looks through a Var to the expression it is bound to."""

    def __init__(self, matchings, var2val):
        self._m = {k: v for k, v in matchings.items()}
        self._var2val = var2val

    def __contains__(self, pattern) -> bool:
        return pattern in self._m

    def __getitem__(self, pattern):
        return self._m[pattern]

    def value(self, pattern):
        return self.resolve(self._m[pattern])

    def resolve(self, expr):
        while isinstance(expr, relax.Var) and expr in self._var2val:
            expr = self._var2val[expr]
        return expr


def is_int8(expr) -> bool:
    sinfo = expr.ty
    return isinstance(sinfo, relax.TensorType) and sinfo.dtype == "int8"


def static_shape(expr) -> list[int]:
    return [int(v) for v in expr.ty.shape.values]


__all__ = ["NotLowered", "QuantizeTail", "dequantize", "rewrite_pass", "is_int8", "static_shape"]
