"""Integer arithmetic in the shapes LLVM vectorizes: Relax passes for the LLVM CPU targets.

``compile/lower`` writes TFLite's arithmetic the way the reference kernels state it:
MultiplyByQuantizedMultiplier as ``((int64(acc + bias) * M + 2**30) >> 31)`` with ``M`` a
per-channel int64 constant tensor, its rounding nudge as a compare-and-select, and convs as
``sum(int32(x) * int32(w))``. Compiled as it is, LLVM keeps the int64 product scalar on NEON
(no 64 x 64-bit vector multiply; on cortex-a72 ~3.5 M of the model's 4.9 M instructions) and
widens every int8 product to int32 on its own. These exact rewrites, run by
``compile.llvm_cpu.pipeline.fusion_passes`` for host and aarch64 builds (the Cortex-M backend has its own),
give LLVM forms it maps onto NEON / AVX-512 instructions:

* ``NeonRequant`` (aarch64 only): ``int32((int64(acc) * M + 2**30) >> 31)`` -> SQRDMULH, which
  computes exactly that for ``0 < M < 2**31``;
* ``FoldBiasIntoRequant``: ``int64(x + B) * M + R  ->  int64(x) * M + (B * M + R)``, with B,
  M, R constants (one SMLAL / VPMULDQ + add). Equal whenever ``x + B`` does not overflow
  int32, where TFLite's own int32 addition is undefined;
* ``RoundingNudge``: RoundingDivideByPOT's ``high + where(high < 0, half - 1, half)`` ->
  ``high + (high >> 31) + half`` (SSRA instead of compare + select);
* ``SmallInputHighMul`` (x86-64): a quantized add's input rescale ``(int8 - zp) << 20`` times
  M in int32 arithmetic (the input's 9-bit range lets M split into two int32 products);
* ``VnniConvs`` + ``X86Requant`` (x86-64): 1x1 convs on VPDPBUSD with their input offset as a
  Relax add that ``FoldBiasIntoRequant`` folds, then MultiplyByQuantizedMultiplier and its
  rounding shift as one block, ``(int32((int64(x) * M + K) >> 31) - (x < N)) >> s``, which
  ``compile.llvm_cpu.intrin.x86_requant`` tensorizes without widening int32 lanes to int64;
* ``MergeClips`` (x86-64): the output's int8 clamp and fused activation as one clamp;
* ``NarrowConstants`` (after legalization and constant folding): an int64 constant tensor
  argument of a kernel whose values all fit int32 is stored as int32 and widened inside the
  kernel (``astype`` fused into it), so LLVM sees the sign extension;
* ``legalize_conv2d``: int8 convs with weights in [-127, 127] (TFLite's int8 weight range)
  add two products in int16 before widening (SMULL + SMLAL, then one SADDW per pair);
  ``conv2d_legalizer(target)`` makes aarch64 1x1 convs, with the dot-product extension
  (``+dotprod``: rpi5), convs on weights packed for SDOT (``pack_sdot_weights``), else (rpi4,
  rpi3) int16 multiply-accumulates on weights widened at compile time (``_mla_conv``); on
  x86-64 with AVX-512 VNNI (the host), ``VnniConvs`` makes the 1x1 convs on the input offset
  to uint8 and weights packed for VPDPBUSD (``_vnni_conv``). All three are tensorized in
  ``compile.llvm_cpu.schedules``.

TFLite's rounding: https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/kernels/internal/common.h
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.lower.fixedpoint import const_value, fits_int32, iconst
from compile.lower.patterns import rewrite_pass

def _fold_bias_patterns():
    x, bias, mult, offset = wildcard(), is_const(), is_const(), is_const()
    acc = is_op("relax.add")(x, bias)
    wide = is_op("relax.multiply")(is_op("relax.astype")(acc), mult)
    root = is_op("relax.add")(wide, offset)

    def rewriter(orig, m):
        dtypes = [str(e.ty.dtype) for e in (m[x], m[bias], m[mult], m[offset])]
        if dtypes != ["int32", "int32", "int64", "int64"] or str(orig.ty.dtype) != "int64":
            return orig
        b, mv, r = (const_value(m[e]).astype(np.int64) for e in (bias, mult, offset))
        folded = b * mv + r   # int64: |b| < 2**31, |m| < 2**32, so no overflow
        if folded.ndim > 1:
            return orig   # per-channel vectors only (the scheme of fixedpoint.py)
        return R.add(R.multiply(R.astype(m[x], "int64"), m[mult]), iconst(folded, "int64"))

    return [(root, rewriter)]


FoldBiasIntoRequant = rewrite_pass("FoldBiasIntoRequant", _fold_bias_patterns)


NEON_SQRDMULH = "llvm.aarch64.neon.sqrdmulh"


def _sqrdmulh(acc, mult):
    """TE: SQRDMULH(acc, mult) per element, ``mult`` along the last axis (or a scalar)."""
    from tvm import te

    def body(*i):
        m = mult[i[-1]] if len(mult.shape) else mult()
        return tvm.tirx.call_llvm_pure_intrin("int32", NEON_SQRDMULH, acc(*i), m)

    return te.compute(acc.shape, body, name="sqrdmulh")


class _ChainMatcher(relax.PyExprMutator):
    """A mutator that matches chains of bindings backwards through ``var2val`` (set per
    function by ``_mutate_functions``)."""

    def __init__(self, mod: tvm.IRModule, var2val: dict):
        super().__init__(mod)
        self.var2val = var2val

    def _resolve(self, expr):
        return self.var2val.get(expr, expr) if isinstance(expr, relax.Var) else expr

    def _value(self, expr, op: str):
        expr = self._resolve(expr)
        if isinstance(expr, relax.Call) and expr.op == tvm.ir.Op.get(op):
            return expr
        return None

    def _const(self, expr, dtype: str):
        expr = self._resolve(expr)
        if isinstance(expr, tvm.ir.expr.GenericConst) and str(expr.ty.dtype) == dtype:
            return const_value(expr)
        return None

    def _high_mul(self, expr):
        """(x, M, R) of ``int32((int64(x) * M + R) >> 31)`` with int32 ``x`` and constant
        int64 ``M`` and ``R`` (TFLite's SaturatingRoundingDoublingHighMul after
        ``FoldBiasIntoRequant``); None for any other expression."""
        chain = []
        for op in ("relax.astype", "relax.right_shift", "relax.add", "relax.multiply",
                   "relax.astype"):
            expr = self._value(expr, op)
            if expr is None:
                return None
            chain.append(expr)
            expr = expr.args[0]
        narrow, shift, add, mul, wide = chain
        mult, offset = self._const(mul.args[1], "int64"), self._const(add.args[1], "int64")
        bits = self._const(shift.args[1], "int64")
        if (str(narrow.ty.dtype) != "int32" or str(wide.args[0].ty.dtype) != "int32"
                or mult is None or offset is None or bits is None or np.any(bits != 31)):
            return None
        return wide.args[0], mult, offset


@relax.expr_functor.mutator
class _NeonRequant(_ChainMatcher):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        matched = self._high_mul(call)
        if matched is None:
            return call
        x, mult, offset = matched
        if (mult.ndim > 1 or not np.all((mult > 0) & (mult < 2 ** 31))
                or np.any(offset != 1 << 30)):
            return call
        return self.builder_.call_te(_sqrdmulh, x, iconst(mult.astype(np.int32), "int32"),
                                     primfunc_name_hint="sqrdmulh")


def _mutate_functions(mutator: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    """Every Relax function of ``mod`` through ``mutator`` (its ``var2val`` set per function),
    dead bindings removed."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.var2val = relax.analysis.get_var2val(func)
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())


@tvm.transform.module_pass(opt_level=0, name="sandglass.NeonRequant")
def NeonRequant(mod: tvm.IRModule, _ctx) -> tvm.IRModule:   # noqa: N802 - a pass
    """AArch64: ``int32((int64(acc) * M + 2**30) >> 31)`` with a constant multiplier
    ``0 < M < 2**31`` (TFLite's SaturatingRoundingDoublingHighMul; no saturation case
    since ``M != INT32_MIN``) -> one NEON ``SQRDMULH`` per four lanes, which computes exactly
    ``(2 * acc * M + 2**31) >> 32``. Kernels holding it are vectorized four lanes wide
    (``compile.llvm_cpu.schedules``): LLVM cannot split wider calls of a NEON intrinsic."""
    return _mutate_functions(_NeonRequant(mod, {}), mod)


def _int8_offset_range(expr, resolve=lambda e: e) -> tuple[int, int] | None:
    """[lo, hi] of ``int32(v) (+|-) c`` (or ``int32(v)``) for an int8 tensor ``v`` and an
    integer constant ``c``: the offset input of TFLite's quantized add; None for anything else."""
    def is_call(e, op):
        return isinstance(e, relax.Call) and e.op == tvm.ir.Op.get(op)

    offset = (0, 0)
    if is_call(expr, "relax.add") or is_call(expr, "relax.subtract"):
        c = expr.args[1]
        if not isinstance(c, tvm.ir.expr.GenericConst) or "int" not in str(c.ty.dtype):
            return None
        values = const_value(c).astype(np.int64)
        values = -values if is_call(expr, "relax.subtract") else values
        offset = (int(values.min()), int(values.max()))
        expr = resolve(expr.args[0])
    if not is_call(expr, "relax.astype") or str(expr.args[0].ty.dtype) != "int8":
        return None
    return -128 + offset[0], 127 + offset[1]


def _small_input_patterns():
    y, shift, mult, rnd, high = wildcard(), is_const(), is_const(), is_const(), is_const()
    wide = is_op("relax.astype")(is_op("relax.left_shift")(y, shift))
    t = is_op("relax.add")(is_op("relax.multiply")(wide, mult), rnd)
    root = is_op("relax.astype")(is_op("relax.right_shift")(t, high))

    def rewriter(orig, m):
        if str(orig.ty.dtype) != "int32" or str(m[y].ty.dtype) != "int32":
            return orig
        consts = [const_value(m[e]) for e in (shift, mult, rnd, high)]
        if any(v.ndim for v in consts):
            return orig
        left, mv, r, h = (int(v) for v in consts)
        span = _int8_offset_range(m.resolve(m[y]), m.resolve)
        q = 31 - left
        if (span is None or h != 31 or r != 1 << 30 or not 0 < mv < 2 ** 31
                or not 1 <= left <= 30):
            return orig
        bound = max(abs(span[0]), abs(span[1]))
        mh, ml = mv >> q, mv & ((1 << q) - 1)
        if bound * mh >= 2 ** 31 or bound * ml + (1 << (q - 1)) >= 2 ** 31:
            return orig
        out = R.multiply(m[y], iconst(mh, "int32"))
        if ml:
            low = R.add(R.multiply(m[y], iconst(ml, "int32")), iconst(1 << (q - 1), "int32"))
            out = R.add(out, R.right_shift(low, iconst(q, "int32")))
        return out

    return [(root, rewriter)]


SmallInputHighMul = rewrite_pass("SmallInputHighMul", _small_input_patterns)
SmallInputHighMul.__doc__ = """x86-64: TFLite's quantized add rescales each input as
``SaturatingRoundingDoublingHighMul(y << L, M)``, ``int32((int64(y << L) * M + 2**30) >> 31)``,
with ``y`` an int8 input plus its offset (|y| <= 255). Dividing by ``2**L`` first and splitting
``M = Mh * 2**q + Ml`` (``q = 31 - L``) gives ``y * Mh + ((y * Ml + 2**(q-1)) >> q)``, equal and
all int32 (two VPMULLD instead of widening to int64) when ``|y| * Mh`` and ``|y| * Ml`` fit
int32 (checked). AArch64 keeps SQRDMULH (``NeonRequant``), one instruction."""


def _clip_patterns():
    x = wildcard()
    inner = is_op("relax.clip")(x, wildcard(), wildcard())
    root = is_op("relax.clip")(is_op("relax.astype")(inner), wildcard(), wildcard())

    def bounds(call) -> tuple[int, int] | None:
        try:
            return int(call.args[1].value), int(call.args[2].value)
        except (AttributeError, TypeError):
            return None

    def rewriter(orig, m):
        first, second = bounds(m.value(inner)), bounds(orig)
        if (str(m[x].ty.dtype) != "int32" or str(orig.ty.dtype) != "int8"
                or first is None or second is None
                or first[0] < -128 or first[1] > 127):
            return orig
        lo, hi = max(first[0], second[0]), min(first[1], second[1])
        if lo > hi:
            return orig
        return R.astype(R.clip(m[x], lo, hi), "int8")

    return [(root, rewriter)]


MergeClips = rewrite_pass("MergeClips", _clip_patterns)
MergeClips.__doc__ = """x86-64: the requantized output's two clamps, ``clip(int8(clip(x, -128, 127)),
lo, hi)`` (int8 range, then the fused activation), -> ``int8(clip(x, lo, hi))``: one clamp in
int32 before a saturating narrow (VPMAXSD + VPMOVSDB) instead of clamp, narrow, clamp again."""


REQUANT_BLOCK = "requant_x86"


def _x86_requant(x, mult, offset, negative_below, shift):
    """TE: the requantization ``X86Requant`` matched, per element of ``x`` (int32), the
    constants per channel (last axis); one block, tensorized by ``compile.llvm_cpu.intrin.x86_requant``."""
    from tvm import te

    def body(*i):
        c = i[-1]
        high = ((x(*i).astype("int64") * mult[c].astype("int64") + offset[c]) >> 31).astype("int32")
        return (high - (x(*i) < negative_below[c]).astype("int32")) >> shift[c]

    return te.compute(x.shape, body, name=REQUANT_BLOCK)


@relax.expr_functor.mutator
class _X86Requant(_ChainMatcher):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.right_shift") or str(call.ty.dtype) != "int32":
            return call
        shift = self._const(call.args[1], "int32")
        rounded = self._value(call.args[0], "relax.add")
        half = None if rounded is None else self._const(rounded.args[1], "int32")
        nudged = None if rounded is None else self._value(rounded.args[0], "relax.add")
        if shift is None or half is None or nudged is None:
            return call
        sign = self._value(nudged.args[1], "relax.right_shift")
        if (sign is None or not self._resolve(sign.args[0]).same_as(self._resolve(nudged.args[0]))
                or self._const(sign.args[1], "int32") != 31):
            return call
        matched = self._high_mul(nudged.args[0])
        if matched is None or matched[0].ty.ndim < 1:
            return call
        x, mult, offset = matched
        channels = x.ty.shape[-1]
        if not isinstance(channels, (int, tvm.tirx.IntImm)):
            return call
        c = int(channels)
        try:
            m, r, h, sh = (np.broadcast_to(v, (c,)).astype(np.int64)
                           for v in (mult, offset, half, shift))
        except ValueError:
            return call
        if not (np.all((m > 0) & (m < 2 ** 31)) and np.all((sh >= 1) & (sh < 31))
                and np.all(h == 1 << (sh - 1))):
            return call
        # high + half == (x * M + R + half * 2**31) >> 31 exactly (an integer multiple of 2**31
        # added before the floor division); high < 0 exactly when x * M + R < 0, i.e.
        # x < -floor(R / M) (M > 0)
        k = r + (h << 31)
        below = -(r // m)
        if np.any(np.abs(k) >= 2 ** 62) or not fits_int32(below):
            return call
        return self.builder_.call_te(
            _x86_requant, x, iconst(m.astype(np.int32), "int32"), iconst(k, "int64"),
            iconst(below.astype(np.int32), "int32"), iconst(sh.astype(np.int32), "int32"),
            primfunc_name_hint=REQUANT_BLOCK)


@tvm.transform.module_pass(opt_level=0, name="sandglass.X86Requant")
def X86Requant(mod: tvm.IRModule, _ctx) -> tvm.IRModule:   # noqa: N802 - a pass
    """x86-64 with AVX-512 (after ``FoldBiasIntoRequant`` and ``RoundingNudge``):
    MultiplyByQuantizedMultiplier and its rounding shift,
    ``((h = int32((int64(x) * M + R) >> 31)) + (h >> 31) + half) >> s`` with ``half = 2**(s-1)``,
    ``s >= 1`` and ``0 < M < 2**31`` per channel, -> one ``REQUANT_BLOCK`` computing
    ``(int32((int64(x) * M + K) >> 31) - (x < N)) >> s`` with ``K = R + half * 2**31`` and
    ``N = -floor(R / M)``: equal for every int32 ``x`` (the nudge's sign test moves from the
    product to ``x``), and ``compile.llvm_cpu.intrin.x86_requant`` tensorizes it without widening lanes."""
    return _mutate_functions(_X86Requant(mod, {}), mod)


def _nudge_patterns():
    high, lo, hi, zero = wildcard(), is_const(), is_const(), is_const()
    nudge = is_op("relax.where")(is_op("relax.less")(high, zero), lo, hi)
    root = is_op("relax.add")(high, nudge)

    def rewriter(orig, m):
        if (str(m[high].ty.dtype) != "int32" or const_value(m[zero]).ndim
                or int(const_value(m[zero])) != 0
                or not np.all(const_value(m[lo]) == const_value(m[hi]) - 1)):
            return orig
        sign = R.right_shift(m[high], iconst(31, "int32"))   # -1 where high < 0, else 0
        return R.add(R.add(m[high], sign), m[hi])

    return [(root, rewriter)]


RoundingNudge = rewrite_pass("RoundingNudge", _nudge_patterns)
RoundingNudge.__doc__ = """``high + where(high < 0, half - 1, half)`` -> ``high + (high >> 31) + half``
(RoundingDivideByPOT's nudge without a compare and select: one SSRA on NEON), when every
channel rounds (``half >= 1``: the ``- 1`` applies everywhere)."""


@relax.expr_functor.mutator
class _Narrow(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.call_tir"):
            return call
        if call.args[0].name_hint.startswith(REQUANT_BLOCK):
            return call   # its offsets stay int64: compile.llvm_cpu.intrin.x86_requant's operand type
        args = list(call.args[1].fields)
        changed = False
        for i, arg in enumerate(args):
            if (isinstance(arg, tvm.ir.expr.GenericConst) and str(arg.ty.dtype) == "int64"
                    and const_value(arg).size and const_value(arg).ndim >= 1
                    and fits_int32(const_value(arg))):
                args[i] = R.astype(iconst(const_value(arg).astype(np.int32), "int32"), "int64")
                changed = True
        if not changed:
            return call
        return relax.Call(call.op, [call.args[0], relax.Tuple(args), *call.args[2:]],
                          call.attrs, call.ty_args)


@tvm.transform.module_pass(opt_level=0, name="sandglass.NarrowConstants")
def NarrowConstants(mod: tvm.IRModule, _ctx) -> tvm.IRModule:   # noqa: N802 - a pass
    """int64 constant tensors that fit int32 -> ``astype(int32 constant, int64)`` (then
    ``LegalizeOps`` + ``FuseOps`` put the widening inside the consumer kernel)."""
    functions = {gvar: _Narrow().visit_expr(func) if isinstance(func, relax.Function) else func
                 for gvar, func in mod.functions.items()}
    return tvm.IRModule(functions, attrs=mod.attrs)


def _out_size(x, kh: int, kw: int, stride_h: int, stride_w: int) -> tuple:
    """(N, OH, OW) of an unpadded NHWC conv with a kh x kw window."""
    n, h, wd, _ = x.shape
    return n, (h - kh) // stride_h + 1, (wd - kw) // stride_w + 1


def _pairwise_conv(x, w, stride_h: int, stride_w: int):
    """1x1 NHWC x HWIO int8 conv, int32 out, reduced two input channels at a time in int16."""
    from tvm import te

    n, oh, ow = _out_size(x, 1, 1, stride_h, stride_w)
    k, c = x.shape[3], w.shape[3]
    rk = te.reduce_axis((0, k // 2), name="rk")

    def body(b, i, j, o):
        pair = (x[b, i * stride_h, j * stride_w, 2 * rk].astype("int16")
                * w[0, 0, 2 * rk, o].astype("int16")
                + x[b, i * stride_h, j * stride_w, 2 * rk + 1].astype("int16")
                * w[0, 0, 2 * rk + 1, o].astype("int16"))
        return te.sum(pair.astype("int32"), axis=rk)

    return te.compute((n, oh, ow, c), body, name="conv2d_pairs")


def _pairwise_window_conv(x, w, stride_h: int, stride_w: int, depthwise: bool):
    """KxK NHWC int8 conv (HWIO, or HWOI depthwise with multiplier 1), int32 out, the kernel
    columns reduced two at a time in int16 (an odd last column alone)."""
    from tvm import te

    kh, kw, k, c = (int(v) for v in w.shape)
    c = k if depthwise else c
    n, oh, ow = _out_size(x, kh, kw, stride_h, stride_w)
    ry = te.reduce_axis((0, kh), name="ry")
    rc = None if depthwise else te.reduce_axis((0, k), name="rc")

    def body(b, i, j, o):
        def term(col, dtype):
            xi = x[b, i * stride_h + ry, j * stride_w + col, o if depthwise else rc]
            wi = w[ry, col, o, 0] if depthwise else w[ry, col, rc, o]
            return xi.astype(dtype) * wi.astype(dtype)

        total = None
        for col in range(0, kw - 1, 2):
            pair = (term(col, "int16") + term(col + 1, "int16")).astype("int32")
            total = pair if total is None else total + pair
        if kw % 2:
            total = term(kw - 1, "int32") if total is None else total + term(kw - 1, "int32")
        return te.sum(total, axis=[ry] if depthwise else [ry, rc])

    return te.compute((n, oh, ow, c), body, name="conv2d_pairs")


SDOT_BLOCK = "conv2d_sdot"


def _pack_dot_weights(w: np.ndarray, lanes: int) -> np.ndarray:
    """1x1 HWIO weights (1, 1, K, C) -> [C/L, K/4, L (channel), 4 (input channel)]: the bytes
    one 4-way dot-product instruction multiplies (L output channels, four input channels each)."""
    _, _, k, c = w.shape
    return np.ascontiguousarray(w[0, 0].reshape(k // 4, 4, c // lanes, lanes).transpose(2, 0, 3, 1))


def pack_sdot_weights(w: np.ndarray) -> np.ndarray:
    """[C/4, K/4, 4, 4]: the 16 bytes one SDOT multiplies (``_pack_dot_weights``)."""
    return _pack_dot_weights(w, 4)


def _sdot_conv(x, wp, stride_h: int, stride_w: int):
    """1x1 NHWC int8 conv on packed weights (``pack_sdot_weights``), int32 out."""
    from tvm import te

    n, oh, ow = _out_size(x, 1, 1, stride_h, stride_w)
    k, c = x.shape[3], wp.shape[0] * 4
    rk = te.reduce_axis((0, k), name="rk")
    return te.compute(
        (n, oh, ow, c),
        lambda b, i, j, o: te.sum(x[b, i * stride_h, j * stride_w, rk].astype("int32")
                                  * wp[o // 4, rk // 4, o % 4, rk % 4].astype("int32"), axis=rk),
        name=SDOT_BLOCK)


MLA_BLOCK = "conv2d_mla"
WIDEN_BLOCK = "conv2d_widen"


def _converted_input(x, stride_h: int, stride_w: int, convert):
    """The input pixels a 1x1 conv reads, each element through ``convert`` (``WIDEN_BLOCK``:
    computed once per pixel tile by ``compile.llvm_cpu.schedules``, not once per multiply)."""
    from tvm import te

    n, oh, ow = _out_size(x, 1, 1, stride_h, stride_w)
    return te.compute((n, oh, ow, x.shape[3]),
                      lambda b, i, j, r: convert(x[b, i * stride_h, j * stride_w, r]),
                      name=WIDEN_BLOCK)


def _mla_conv(x, w16, stride_h: int, stride_w: int):
    """1x1 NHWC int8 conv with int16 weights [K, C] (widened at compile time) on an int16 copy
    of the input (``WIDEN_BLOCK``, computed once per pixel tile by ``compile.llvm_cpu.schedules``),
    int32 out: one SMLAL per four output channels per input channel, no widening in the
    reduction loop (NEON without the dot-product extension)."""
    from tvm import te

    x16 = _converted_input(x, stride_h, stride_w, lambda v: v.astype("int16"))
    n, oh, ow, k = x16.shape
    c = w16.shape[1]
    rk = te.reduce_axis((0, k), name="rk")
    return te.compute(
        (n, oh, ow, c),
        lambda b, i, j, o: te.sum(x16[b, i, j, rk].astype("int32") * w16[rk, o].astype("int32"),
                                  axis=rk),
        name=MLA_BLOCK)


VNNI_BLOCK = "conv2d_vnni"
VNNI_OFFSET = 128   # x + 128 as uint8: VPDPBUSD multiplies unsigned by signed bytes


def vnni_lanes(channels: int) -> int:
    """Output channels per VPDPBUSD for a conv with ``channels`` outputs: 16 (zmm), 8 (ymm), or
    0 when neither divides it."""
    return next((lanes for lanes in (16, 8) if channels % lanes == 0), 0)


def pack_vnni_weights(w: np.ndarray) -> np.ndarray:
    """[C/L, K/4, L, 4], L = ``vnni_lanes(C)``: the bytes one VPDPBUSD multiplies
    (``_pack_dot_weights``)."""
    return _pack_dot_weights(w, vnni_lanes(w.shape[3]))


def _vnni_conv(x, wp, stride_h: int, stride_w: int):
    """1x1 NHWC int8 conv on packed weights (``pack_vnni_weights``), int32 out, of the input
    offset by ``VNNI_OFFSET`` to uint8 (``WIDEN_BLOCK``, per pixel tile): its products summed
    four at a time by VPDPBUSD. ``VnniConvs`` subtracts ``VNNI_OFFSET * sum(w)`` per
    channel after it, as a Relax add that ``FoldBiasIntoRequant`` folds into the
    requantization's constants (``X86Requant`` then reads the accumulator itself)."""
    from tvm import te

    xu = _converted_input(x, stride_h, stride_w,
                          lambda v: (v.astype("int16") + VNNI_OFFSET).astype("uint8"))
    n, oh, ow, k = xu.shape
    lanes = int(wp.shape[2])
    c = wp.shape[0] * lanes
    rk = te.reduce_axis((0, k), name="rk")
    return te.compute(
        (n, oh, ow, c),
        lambda b, i, j, o: te.sum(xu[b, i, j, rk].astype("int32")
                                  * wp[o // lanes, rk // 4, o % lanes, rk % 4].astype("int32"),
                                  axis=rk),
        name=VNNI_BLOCK)


def _vnni_legalized(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    """A 1x1 int8 conv as ``_vnni_conv`` (emitted) + ``-VNNI_OFFSET * sum(w)`` per channel
    (returned, a Relax add), when its channels allow it (inputs in fours, outputs in eights);
    else None."""
    a = call.attrs
    wv = _int8_conv_weights(call)
    if (wv is None or a.kernel_layout != "HWIO" or int(a.groups) != 1
            or wv.shape[:2] != (1, 1) or wv.shape[2] % 4 or not vnni_lanes(wv.shape[3])):
        return None
    sums = VNNI_OFFSET * wv[0, 0].astype(np.int32).sum(axis=0)
    acc = bb.emit(bb.call_te(_vnni_conv, call.args[0], iconst(pack_vnni_weights(wv), "int8"),
                             int(a.strides[0]), int(a.strides[1]), primfunc_name_hint="conv2d"))
    return R.add(acc, iconst(-sums.astype(np.int32), "int32"))


DW_VNNI_BLOCK = "conv2d_dwpairs"


def pack_dw_pairs(w: np.ndarray) -> np.ndarray:
    """Depthwise HWOI weights (3, KW, C, 1) -> int16 [2, KW, C, 2]: pair p of kernel rows
    (p, p + 1), interleaved per channel as VPDPWSSD multiplies them; pair 0 holds rows 0 and 1,
    pair 1 a zero and row 2 (so every pair reads two rows inside the window)."""
    kh, kw, c, _ = w.shape
    assert kh == 3, "row pairs are laid out for 3-row kernels"
    out = np.zeros((2, kw, c, 2), np.int16)
    out[0, :, :, 0], out[0, :, :, 1], out[1, :, :, 1] = w[0, :, :, 0], w[1, :, :, 0], w[2, :, :, 0]
    return out


def _dw_vnni_conv(x, wp, stride_h: int, stride_w: int):
    """3xKW NHWC int8 conv on row-pair weights (``pack_dw_pairs``), int32 out: depthwise
    (multiplier 1), or of a one-channel input to every output channel (an image's first conv);
    the two rows of a pair widened to int16 and interleaved per channel, their products summed
    by VPDPWSSD (``compile.llvm_cpu.intrin.x86_vnni.dw_intrin``), 16 (or 8) channels at a time."""
    from tvm import te

    _, kw, c, _ = (int(v) for v in wp.shape)
    one_channel = int(x.shape[3]) == 1
    n, oh, ow = _out_size(x, 3, kw, stride_h, stride_w)
    rp = te.reduce_axis((0, 2), name="rp")
    rx = te.reduce_axis((0, kw), name="rx")
    rt = te.reduce_axis((0, 2), name="rt")
    return te.compute(
        (n, oh, ow, c),
        lambda b, i, j, o: te.sum(
            x[b, i * stride_h + rp + rt, j * stride_w + rx, 0 if one_channel else o].astype("int32")
            * wp[rp, rx, o, rt].astype("int32"), axis=[rp, rx, rt]),
        name=DW_VNNI_BLOCK)


def _dw_vnni_legalized(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    """A 3xK int8 conv, depthwise (multiplier 1) or of a one-channel input, with output channels
    in eights, as ``_dw_vnni_conv``; else None."""
    a = call.attrs
    wv = _int8_conv_weights(call)
    channels = int(call.args[0].ty.shape[3])
    if wv is None or wv.shape[0] != 3:
        return None
    if a.kernel_layout == "HWOI" and int(a.groups) == channels and wv.shape[2:] == (channels, 1):
        pass                                  # depthwise: (3, K, C, 1)
    elif a.kernel_layout == "HWIO" and int(a.groups) == 1 and channels == wv.shape[2] == 1:
        wv = wv.transpose(0, 1, 3, 2)         # one input channel: (3, K, 1, C) -> (3, K, C, 1)
    else:
        return None
    if not vnni_lanes(wv.shape[2]):
        return None
    return bb.call_te(_dw_vnni_conv, call.args[0], iconst(pack_dw_pairs(wv), "int16"),
                      int(a.strides[0]), int(a.strides[1]), primfunc_name_hint="conv2d")


@relax.expr_functor.mutator
class _VnniConvs(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.nn.conv2d"):
            return call
        conv = _vnni_legalized(self.builder_, call)
        return call if conv is None else conv


@tvm.transform.module_pass(opt_level=0, name="sandglass.VnniConvs")
def VnniConvs(mod: tvm.IRModule, _ctx) -> tvm.IRModule:   # noqa: N802 - a pass
    """x86-64 with AVX-512 VNNI, before ``FoldBiasIntoRequant``: the 1x1 convs VPDPBUSD can
    compute become ``_vnni_conv`` kernels followed by the subtraction of their input offset's
    contribution as a Relax add, which ``FoldBiasIntoRequant`` then folds into the
    requantization (``X86Requant``'s block reads the accumulator itself)."""
    return _mutate_functions(_VnniConvs(mod), mod)


def has_vnni(target: tvm.target.Target) -> bool:
    """x86-64 target with AVX-512 VNNI (VPDPBUSD)."""
    return _has_x86_feature(target, "avx512vnni")


def _has_x86_feature(target: tvm.target.Target, feature: str) -> bool:
    if str(target.kind) != "llvm" or is_aarch64(target):
        return False
    from tvm.target import codegen

    return bool(codegen.target_has_features(feature, target))


def has_avx2(target: tvm.target.Target) -> bool:
    """x86-64 target with AVX2 (what ``X86Requant``'s intrinsic needs, 8 lanes)."""
    return _has_x86_feature(target, "avx2")


def has_avx512(target: tvm.target.Target) -> bool:
    """x86-64 target with AVX-512 (``X86Requant``'s intrinsic 16 lanes wide)."""
    return _has_x86_feature(target, "avx512f")


def is_aarch64(target: tvm.target.Target) -> bool:
    return str(target.attrs.get("mtriple", "")).startswith("aarch64")


def has_dotprod(target: tvm.target.Target) -> bool:
    """AArch64 target with the dot-product extension (SDOT/UDOT): ``+dotprod`` in mattr."""
    return is_aarch64(target) and "+dotprod" in [str(a) for a in target.attrs.get("mattr", [])]


def _int8_conv_weights(call: relax.Call) -> np.ndarray | None:
    """The constant int8 weights of an unpadded, undilated NHWC int8 -> int32 conv; None for
    any other conv (left to TVM's own legalization)."""
    a = call.attrs
    x, w = call.args
    if (isinstance(w, tvm.ir.expr.GenericConst) and str(x.ty.dtype) == "int8"
            and str(w.ty.dtype) == "int8" and str(a.out_dtype) == "int32"
            and a.data_layout == "NHWC" and a.out_layout == "NHWC"
            and not any(int(p) for p in a.padding) and all(int(d) == 1 for d in a.dilation)):
        return const_value(w)
    return None


def conv2d_legalizer(target: tvm.target.Target):
    """``relax.nn.conv2d`` legalization for ``target``: on aarch64, 1x1 int8 convs become SDOT
    kernels (packed weights) with the dot-product extension when both channel counts divide
    by 4, else int16 MLA kernels (``_mla_conv``); on x86-64 with AVX-512 VNNI, 3xK depthwise
    convs become VPDPWSSD row-pair kernels (``_dw_vnni_conv``; its 1x1 VPDPBUSD convs
    ``VnniConvs`` made before); every other conv: ``legalize_conv2d``."""
    if not is_aarch64(target):
        if not has_vnni(target):
            return legalize_conv2d

        def legalize_x86(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
            conv = _dw_vnni_legalized(bb, call)
            return legalize_conv2d(bb, call) if conv is None else conv

        return legalize_x86
    dotprod = has_dotprod(target)

    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        a = call.attrs
        wv = _int8_conv_weights(call)
        if wv is None or a.kernel_layout != "HWIO" or int(a.groups) != 1 or wv.shape[:2] != (1, 1):
            return legalize_conv2d(bb, call)
        strides = int(a.strides[0]), int(a.strides[1])
        if dotprod and wv.shape[2] % 4 == 0 and wv.shape[3] % 4 == 0:
            return bb.call_te(_sdot_conv, call.args[0], iconst(pack_sdot_weights(wv), "int8"),
                              *strides, primfunc_name_hint="conv2d")
        return bb.call_te(_mla_conv, call.args[0], iconst(wv[0, 0].astype(np.int16), "int16"),
                          *strides, primfunc_name_hint="conv2d")

    return legalize


def legalize_conv2d(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``relax.nn.conv2d`` legalization for the LLVM CPU targets: an int8 conv whose constant
    weights avoid -128 adds two products in int16 before widening (``|x * w| <= 128 * 127``,
    so two fit int16 exactly): pairs of input channels for a 1x1 conv with an even channel
    count, pairs of kernel columns for a KxK or depthwise conv. NEON then needs one SMULL +
    one SMLAL per pair and widens to int32 once. Others: TVM's own."""
    a = call.attrs
    x, w = call.args
    default = tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")
    wv = _int8_conv_weights(call)
    if wv is None or wv.min() == -128:
        return default(bb, call)
    shape = list(wv.shape)
    strides = int(a.strides[0]), int(a.strides[1])
    channels = int(x.ty.shape[3])
    if a.kernel_layout == "HWIO" and int(a.groups) == 1 and shape[:2] == [1, 1]:
        if shape[2] % 2:
            return default(bb, call)
        return bb.call_te(_pairwise_conv, x, w, *strides, primfunc_name_hint="conv2d")
    depthwise = (a.kernel_layout == "HWOI" and int(a.groups) == channels == shape[2]
                 and shape[3] == 1)
    if shape[1] >= 2 and (depthwise or (a.kernel_layout == "HWIO" and int(a.groups) == 1)):
        return bb.call_te(_pairwise_window_conv, x, w, *strides, depthwise,
                          primfunc_name_hint="conv2d")
    return default(bb, call)
