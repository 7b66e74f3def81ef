"""Whole int8 convolutions as calls into the firmware's kernel library (``firmware/sg_nn.h``).

The integer lowering writes a quantized CONV_2D / DEPTHWISE_CONV_2D as a chain of Relax ops
(``compile/lower/conv.py`` + ``fixedpoint.requantize_output``)::

    [pad(x, zx)] -> conv2d(int32) -> add(bias) -> astype(int64) -> multiply(M) -> add(2^30)
    -> right_shift(31) -> astype(int32) -> [add(where(less(h, 0), half - 1, half)) ->
    right_shift(rs)] -> [add(zy)] -> clip -> astype(int8) -> [clip]

``OffloadConvolutions`` (an IRModule -> IRModule pass, before legalization) finds that chain
from the IR's structure and replaces it with one ``call_tir`` of a PrimFunc that carries the
layer in its attributes (``sg.nn``: which kernel; ``sg.shape``: the ``sg_conv_shape``
fields) and takes the constants as the kernel reads them: weights OHWI (standard) or
[C][KH][KW] (depthwise), int32 bias, multiplier and right shift per output channel (+ 256
where the channel needs the general requantization: ``fast_channels``).  That
PrimFunc's body is the same computation in TE, loops ordered as the C kernel reads and
writes (``sg_nn.h`` documents the order): the memory plan's overlap analysis and the MAC
count read it; the C printed for the call is ``emit``'s one-line call instead.

Left as they are (TVM's kernels compute them): multipliers with a left shift (effective
scale >= 1), dilated windows, depthwise channel multipliers other than 1, batches > 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx

from compile.backends.cortexm.cemit import KernelC, ctype
from compile.lower.fixedpoint import const_value

# fields of sg_conv_shape, in order
SHAPE_FIELDS = ("ih", "iw", "c", "oh", "ow", "o", "kh", "kw", "sh", "sw", "pt", "pl",
                "zx", "zy", "lo", "hi", "cb", "rows", "fast", "widen")
# sg_conv_s8 on M4/M7 widens the two pixels' rows to int16 (4 K bytes of scratch) from this
# row length K on; a shorter row is mostly its tail, which the int8 loop handles as well
WIDEN_MIN = 8
# bytes of int16 planes sg_dwconv_s8 converts at a time: several channels' whole planes when
# they fit, else bands of output rows of one channel (at least one output row)
PLANES_BYTES = 512
# 3x3 depthwise layers of at most this many output pixels, by strides (and a multiple of 4
# channels), read the NHWC input four channels per pass instead: per channel, planes cost a
# conversion and a setup that few pixels do not repay (measured on mobilenext_mcu_m100)
QUAD_MAX_PIXELS = {(1, 1): 4, (2, 2): 64}


@dataclass
class ConvLayer:
    kind: str                   # conv | dwconv
    shape: dict                 # SHAPE_FIELDS -> int
    weights: np.ndarray         # int8, the kernel's layout
    bias: np.ndarray            # int32 [O]
    mult: np.ndarray            # int32 [O]
    rshift: np.ndarray          # int32 [O]
    x: relax.Expr | None = None  # the int8 tensor it convolves (before an explicit pad)

    @property
    def scratch_bytes(self) -> int:
        return scratch_bytes(self.kind, self.shape)


def scratch_bytes(kind: str, s: dict) -> int:
    """Scratch the kernel needs for a call with the sg_conv_shape ``s``."""
    if kind == "conv":
        # the gathered windows of 2 pixels (int8), then the 2 rows widened to int16
        k = s["kh"] * s["kw"] * s["c"]
        direct = s["kh"] == s["kw"] == 1 and s["pt"] == s["pl"] == 0
        return (0 if direct else (2 * k + 3) & ~3) + 4 * k * s["widen"]
    return s["cb"] * s["rows"] * band_width(s) * 2 if band_kernel(s) else 0


def band_kernel(s: dict) -> bool:
    """sg_dwconv_s8 reads through its int16 band: 3x3 windows, stride 1 or 2, and a band
    (``rows`` > 0; 0 takes the plain loop)."""
    return s["kh"] == s["kw"] == 3 and s["sh"] == s["sw"] and s["sw"] in (1, 2) and s["rows"] > 0


def band_window(s: dict) -> bool:
    """A window sg_dwconv_s8 can read through an int16 band: 3x3, stride 1 or 2."""
    return s["kh"] == s["kw"] == 3 and s["sh"] == s["sw"] and s["sw"] in (1, 2)


def plane_rows(s: dict) -> int:
    """Rows of the channel plane sg_dwconv_s8 reads."""
    return (s["oh"] - 1) * s["sh"] + 3


def plane_blocks(s: dict, budget: int = PLANES_BYTES) -> tuple[int, int]:
    """(channels, rows) sg_dwconv_s8 converts at a time within ``budget`` bytes."""
    row = band_width(s) * 2
    if plane_rows(s) * row <= budget:
        return int(max(1, min(s["c"], budget // (plane_rows(s) * row)))), plane_rows(s)
    band_oh = max(1, min(s["oh"], (budget // row - 3) // s["sh"] + 1))
    return 1, (band_oh - 1) * s["sh"] + 3


def quad_window(s: dict) -> bool:
    """A depthwise call sg_dwconv_s8 can run four channels per pass from the NHWC input."""
    return s["kh"] == s["kw"] == 3 and s["c"] % 4 == 0


def quad_kernel(s: dict) -> bool:
    """sg_dwconv_s8 runs four channels per pass (``cb`` 4 without a band, ``rows`` 0)."""
    return quad_window(s) and s["cb"] == 4 and s["rows"] == 0


def band_width(s: dict) -> int:
    """sg_band_width of sg_nn.h."""
    wd = (s["ow"] - 1) * s["sw"] + s["kw"] + 2
    return (wd + 1) & ~1


# -- schedule choices ------------------------------------------------------------------------
# The sg_conv_shape fields that choose how a kernel computes a call, not what it computes:
# ``widen`` (sg_conv_s8 on M4/M7: SMLAD over rows widened to int16, or the int8 dot products)
# and ``cb``/``rows`` (sg_dwconv_s8: channels and rows per int16 band; rows 0: no band, the
# plain loop, or with cb 4 four channels per pass from the NHWC input, which has no other
# choice).  The defaults come from WIDEN_MIN, PLANES_BYTES and QUAD_MAX_PIXELS; tuning.py
# measures the others per call.
KNOB_FIELDS = ("widen", "cb", "rows")
# int16 bytes per band the depthwise choices try
PLANES_BUDGETS = (256, 512, 1024, 2048, 4096, 8192, 16384)


def shape_of(prim: tirx.PrimFunc) -> dict:
    """A library call's sg_conv_shape fields."""
    return dict(zip(SHAPE_FIELDS, (int(v) for v in prim.attrs["sg.shape"])))


def knob_choices(prim: tirx.PrimFunc, widens: bool) -> list[dict]:
    """The distinct schedule choices of a library call, its default first.  ``widens``: the
    core runs sg_conv_s8's widened path (DSP without Helium)."""
    s = shape_of(prim)
    default = {f: s[f] for f in KNOB_FIELDS}
    choices = [default]

    def add(**change) -> None:
        choice = {**default, **change}
        if choice not in choices:
            choices.append(choice)

    if str(prim.attrs["sg.nn"]) == "conv":
        if widens:
            add(widen=1 - s["widen"])
    elif quad_kernel(s):
        pass    # its order of reads and writes is another (reference): the plan is made for it
    elif band_window(s):
        for budget in PLANES_BUDGETS:
            cb, rows = plane_blocks(s, budget)
            add(cb=cb, rows=rows)
        add(cb=1, rows=0)
    return choices


def with_knobs(prim: tirx.PrimFunc, knobs: dict) -> tirx.PrimFunc:
    """The call with the schedule choice ``knobs`` (fields of KNOB_FIELDS)."""
    s = {**shape_of(prim), **{f: int(knobs[f]) for f in KNOB_FIELDS}}
    return prim.with_attrs({"sg.shape": [s[f] for f in SHAPE_FIELDS],
                            "sg.scratch": scratch_bytes(str(prim.attrs["sg.nn"]), s)})


# -- matching -------------------------------------------------------------------------------
def _op(expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == f"relax.{name}"


_CONV, _PAD = "nn.conv2d", "nn.pad"


def _is_const(expr) -> bool:
    return type(expr).__name__ in ("Constant", "GenericConst")


def _scalar(expr) -> int | None:
    if not _is_const(expr):
        return None
    v = const_value(expr)
    return int(v.reshape(-1)[0]) if v.size == 1 else None


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _per_channel(expr, n: int) -> np.ndarray | None:
    """A constant broadcast along the last (channel) axis, as [n] int64, or None."""
    if not _is_const(expr):
        return None
    v = const_value(expr).astype(np.int64)
    if v.size == 1:
        return np.full(n, int(v.reshape(-1)[0]), np.int64)
    if v.shape[-1] != n or v.size != n:
        return None
    return v.reshape(n)


def match_conv(call, value_of) -> ConvLayer | None:
    """The ConvLayer whose chain ends at ``call``, or None.  ``value_of(var)`` is the
    expression a dataflow variable is bound to (``relax.analysis.get_var2val``)."""
    def arg(expr, i=0):
        a = expr.args[i]
        return value_of(a) if isinstance(a, relax.Var) else a

    lo, hi = -128, 127
    e = call
    if _op(e, "clip") and _dtype(e) == "int8":
        lo, hi = max(lo, int(e.args[1].value)), min(hi, int(e.args[2].value))
        e = arg(e)
    if not (_op(e, "astype") and _dtype(e) == "int8"):
        return None
    e = arg(e)
    if not (_op(e, "clip") and _dtype(e) == "int32"):
        return None
    lo, hi = max(lo, int(e.args[1].value)), min(hi, int(e.args[2].value))
    if lo > hi:
        return None
    e = arg(e)
    zy = 0
    if _op(e, "add") and _scalar(e.args[1]) is not None:
        zy, e = _scalar(e.args[1]), arg(e)
    n_out = int(e.ty.shape.values[-1])
    rshift = np.zeros(n_out, np.int64)
    if _op(e, "right_shift") and _dtype(e) == "int32":
        rshift = _per_channel(e.args[1], n_out)
        add = arg(e)
        if rshift is None or not _op(add, "add") or np.any(rshift < 0) or np.any(rshift > 31):
            return None
        h_var, where = add.args[0], arg(add, 1)
        if not (_op(where, "where") and _op(arg(where), "less")
                and arg(where).args[0].same_as(h_var) and _scalar(arg(where).args[1]) == 0):
            return None
        half = np.where(rshift > 0, np.left_shift(1, np.maximum(rshift - 1, 0)), 0)
        neg, pos = _per_channel(where.args[1], n_out), _per_channel(where.args[2], n_out)
        if (neg is None or pos is None or np.any(pos != half)
                or np.any(neg != half - (rshift > 0))):
            return None
        e = value_of(h_var) if isinstance(h_var, relax.Var) else h_var
    # h = astype(right_shift(add(multiply(astype(acc, int64), M), 2^30), 31), int32)
    if not (_op(e, "astype") and _dtype(e) == "int32"):
        return None
    e = arg(e)
    if not (_op(e, "right_shift") and _scalar(e.args[1]) == 31):
        return None
    e = arg(e)
    if not (_op(e, "add") and _scalar(e.args[1]) == 1 << 30):
        return None
    e = arg(e)
    if not _op(e, "multiply"):
        return None
    mult = _per_channel(e.args[1], n_out)
    if mult is None or np.any(mult < 0) or np.any(mult >= 1 << 31):
        return None          # a left shift folded into the multiplier: TVM's kernel
    e = arg(e)
    if not (_op(e, "astype") and _dtype(e) == "int64"):
        return None
    e = arg(e)
    bias = np.zeros(n_out, np.int64)
    if _op(e, "add"):
        bias = _per_channel(e.args[1], n_out)
        if bias is None:
            return None
        e = arg(e)
    if not (_op(e, _CONV) and _is_const(e.args[1])):
        return None
    return _conv_layer(e, arg(e), bias, mult, rshift, zy, lo, hi)


def _conv_layer(conv, data, bias, mult, rshift, zy, lo, hi) -> ConvLayer | None:
    a = conv.attrs
    if (str(a.data_layout) != "NHWC" or str(a.out_layout) != "NHWC"
            or any(int(d) != 1 for d in a.dilation) or str(a.out_dtype) != "int32"):
        return None
    x = conv.args[0]
    pt, pl, pb, pr = (int(p) for p in a.padding)
    zx = 0
    if _op(data, _PAD) and str(data.attrs.pad_mode) == "constant":
        pw = [int(p) for p in data.attrs.pad_width]
        if any(pw[:2]) or any(pw[6:]) or (any((pt, pl, pb, pr)) and float(data.attrs.pad_value)):
            return None
        zx = int(float(data.attrs.pad_value))
        if zx != float(data.attrs.pad_value) or not -128 <= zx <= 127:
            return None
        pt, pb, pl, pr = pt + pw[2], pb + pw[3], pl + pw[4], pr + pw[5]
        x = data.args[0]
    if _dtype(x) != "int8" or _dtype(conv.args[1]) != "int8":
        return None
    n, ih, iw, c = (int(v) for v in x.ty.shape.values)
    _, oh, ow, o = (int(v) for v in conv.ty.shape.values)
    layout = str(a.kernel_layout)
    w = const_value(conv.args[1]).astype(np.int8)
    w = np.transpose(w, [layout.index(ch) for ch in "OHWI"])        # -> OHWI
    kh, kw = w.shape[1], w.shape[2]
    sh, sw = (int(s) for s in a.strides)
    groups = int(a.groups)
    if n != 1 or (oh - 1) * sh + kh > ih + pt + pb or (ow - 1) * sw + kw > iw + pl + pr:
        return None
    shape = dict(ih=ih, iw=iw, c=c, oh=oh, ow=ow, o=o, kh=kh, kw=kw, sh=sh, sw=sw, pt=pt,
                 pl=pl, zx=zx, zy=int(zy), lo=int(lo), hi=int(hi), cb=1, rows=0,
                 widen=int(groups == 1 and kh * kw * c >= WIDEN_MIN))
    if groups == 1 and w.shape[3] == c:
        kind, weights = "conv", np.ascontiguousarray(w)
    elif groups == c == o and w.shape[3] == 1:
        kind, weights = "dwconv", np.ascontiguousarray(w[:, :, :, 0])   # [C][KH][KW]
        if quad_window(shape) and oh * ow <= QUAD_MAX_PIXELS.get((sh, sw), 0):
            shape["cb"], shape["rows"] = 4, 0
        elif band_window(shape):
            shape["cb"], shape["rows"] = plane_blocks(shape)
    else:
        return None
    fast = fast_channels(weights, bias, rshift)
    shape["fast"] = int(fast.all())
    return ConvLayer(kind, shape, weights, bias.astype(np.int32), mult.astype(np.int32),
                     (rshift + 256 * ~fast).astype(np.int32), x)


def fast_channels(weights: np.ndarray, bias: np.ndarray, rshift: np.ndarray) -> np.ndarray:
    """Per output channel: sg_nn.h's fast requantization is exact for it (every accumulator
    |bias + sum x w|, x in [-128, 127], stays below 2^30, and its right shift is in
    [1, 22]).  The kernel reads rs + 256 for the others."""
    reach = np.abs(bias.astype(np.int64)) + 128 * np.abs(
        weights.astype(np.int64)).reshape(len(bias), -1).sum(axis=1)
    return (reach < 1 << 30) & (rshift >= 1) & (rshift <= 22)


# -- the PrimFunc standing for a call -------------------------------------------------------
def reference(layer: ConvLayer) -> tirx.PrimFunc:
    """The layer in TE, loops in the C kernel's order, with ``sg.nn``/``sg.shape``
    attributes.  Parameters: x, weights, bias, mult, rshift, y."""
    s = layer.shape
    x = te.placeholder((1, s["ih"], s["iw"], s["c"]), "int8", "x")
    w = te.placeholder(layer.weights.shape, "int8", "w")
    bias, mult, rsh = (te.placeholder((s["o"],), "int32", n) for n in ("bias", "mult", "rshift"))
    ky = te.reduce_axis((0, s["kh"]), "ky")
    kx = te.reduce_axis((0, s["kw"]), "kx")

    def tap(oy, ox, ci):
        iy, ix = oy * s["sh"] + ky - s["pt"], ox * s["sw"] + kx - s["pl"]
        inside = tirx.all(iy >= 0, iy < s["ih"], ix >= 0, ix < s["iw"])
        return tirx.if_then_else(inside, x[0, iy, ix, ci], tirx.const(s["zx"], "int8"))

    out = (1, s["oh"], s["ow"], s["o"])
    if layer.kind == "conv":
        ci = te.reduce_axis((0, s["c"]), "ci")
        acc = te.compute(out, lambda n, oy, ox, o: te.sum(
            tap(oy, ox, ci).astype("int32") * w[o, ky, kx, ci].astype("int32"),
            axis=[ky, kx, ci]), name="acc")
    else:
        acc = te.compute(out, lambda n, oy, ox, o: te.sum(
            tap(oy, ox, o).astype("int32") * w[o, ky, kx].astype("int32"),
            axis=[ky, kx]), name="acc")

    def requant(n, oy, ox, o):
        a = acc[n, oy, ox, o] + bias[o]
        h = ((a.astype("int64") * mult[o].astype("int64") + tirx.const(1 << 30, "int64"))
             >> tirx.const(31, "int64")).astype("int32")
        r = rsh[o] & 255
        nudge = tirx.if_then_else(
            r > 0, (tirx.const(1, "int32") << (r - 1)) - tirx.if_then_else(h < 0, 1, 0), 0)
        v = ((h + nudge) >> r) + s["zy"]
        return tirx.max(tirx.min(v, s["hi"]), s["lo"]).astype("int8")

    y = te.compute(out, requant, name="y")
    func = te.create_prim_func([x, w, bias, mult, rsh, y])
    sch = s_tir.Schedule(func)
    block = sch.get_sblock("acc")
    n, oy, ox, o, *red = sch.get_loops(block)
    if layer.kind == "conv":
        # pixel pairs in raster order, every output channel of a pair before the next
        p0, p1 = sch.split(sch.fuse(oy, ox), [None, 2])
        sch.reorder(p0, o, p1, *red)
        sch.reverse_compute_at(sch.get_sblock("y"), p1, True)
    elif quad_kernel(s):
        # quad by quad, pixels in raster order, the quad's channels of a pixel together
        o4, oi = sch.split(o, [None, 4])
        sch.reorder(o4, oy, ox, oi, *red)
        sch.reverse_compute_at(sch.get_sblock("y"), oi, True)
    else:
        # channel by channel, rows, pixels
        sch.reorder(o, oy, ox, *red)
        sch.reverse_compute_at(sch.get_sblock("y"), ox, True)
    attrs = {"sg.nn": layer.kind, "sg.shape": [int(s[f]) for f in SHAPE_FIELDS],
             "sg.scratch": layer.scratch_bytes, "op_pattern": 8, "global_symbol": "main"}
    return sch.mod["main"].with_attrs(attrs)


def is_library_call(prim: tirx.PrimFunc) -> bool:
    return prim.attrs is not None and "sg.nn" in prim.attrs


def emit(name: str, prim: tirx.PrimFunc) -> KernelC:
    """The C function for a call: the layer's sg_conv_shape and one call of its kernel."""
    kind = str(prim.attrs["sg.nn"])
    values = [int(v) for v in prim.attrs["sg.shape"]]
    scratch = int(prim.attrs["sg.scratch"])
    shape = ", ".join(f".{f} = {v}" for f, v in zip(SHAPE_FIELDS, values))
    fn, ws = (("sg_conv_s8", "(int8_t *)ws") if kind == "conv"
              else ("sg_dwconv_s8", "(int16_t *)(void *)ws"))
    if not scratch:
        ws = "0"
    body = (f"  static const sg_conv_shape s = {{{shape}}};\n"
            f"  {fn}(&s, x, w, bias, mult, rshift, y, {ws});\n}}\n")
    params = ["x", "w", "bias", "mult", "rshift", "y"]
    dtypes = ["int8", "int8", "int32", "int32", "int32", "int8"]
    written = [False] * 5 + [True]
    decls = [(("" if wr else "const ") + ctype(d), p)
             for p, d, wr in zip(params, dtypes, written)]
    if scratch:
        decls.append(("uint8_t", "ws"))
    return KernelC(name, decls, body, dtypes, written, scratch, False)


# -- the pass -------------------------------------------------------------------------------
@relax.expr_functor.mutator
class _Offload(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod
        self.value_of = {}

    def transform(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function):
                var2val = relax.analysis.get_var2val(func)
                self.value_of = lambda v, m=var2val: m.get(v, v)
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_call_(self, call):
        layer = match_conv(call, self.value_of)
        if layer is None:
            return super().visit_call_(call)
        gv = self.builder_.add_func(reference(layer), f"sg_{layer.kind}")
        consts = [relax.const(v) for v in (layer.weights, layer.bias, layer.mult,
                                           layer.rshift)]
        return relax.call_tir(gv, [self.visit_expr(layer.x), *consts], call.ty)


@tvm.transform.module_pass(opt_level=0, name="OffloadConvolutions")
def OffloadConvolutions(mod: tvm.IRModule, ctx) -> tvm.IRModule:  # noqa: ARG001
    """Quantized convolutions -> calls of ``firmware/sg_nn.h``'s kernels (module doc)."""
    return _Offload(mod).transform()
