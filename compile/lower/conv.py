"""LowerQuantizedConv: int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED as integer programs.

Follows LiteRT's reference_integer_ops::ConvPerChannel / DepthwiseConvPerChannel /
FullyConnected[PerChannel] (tflite/kernels/internal/reference/integer_ops/*.h):

    acc[c] = sum (x - zx) * w  + bias[c]                   (int32)
    y      = clamp(MBQM(acc, M[c], shift[c]) + zy, act_lo, act_hi)       (convolutions)
    y      = clamp(round(acc * E[c]) + zy, act_lo, act_hi)               (fully connected)

with M, shift = QuantizeMultiplier(E[c]) and E[c] = sx * sw[c] / sy in double precision (the
reference FULLY_CONNECTED rounds acc * E in double; reproduced exactly with int64 arithmetic). The zero point is folded
into the bias at compile time: sum (x - zx) * w = sum x * w - zx * sum w, so the convolution runs
int8 x int8 -> int32. Padded taps must contribute zero to sum (x - zx) * w, so when zx != 0 the
input is padded explicitly with zx before a padding-free convolution.
"""

from __future__ import annotations

import numpy as np
from tvm.relax import op as R
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.errors import ModelError
from compile.lower.fixedpoint import (
    const_value,
    finish,
    iconst,
    qparams,
    requantize_output,
    round_multiply_double,
)
from compile.lower.patterns import QuantizeTail, dequantize, is_int8, rewrite_pass


def _patterns():
    x_deq, x, x_scale, x_zp = dequantize()
    w = is_const()
    w_src = w | is_op("relax.permute_dims")(w)
    w_deq, _, w_scale, w_zp = dequantize(w_src)
    w_any = w_deq | is_op("relax.reshape")(w_deq, wildcard())
    conv = is_op("relax.nn.conv2d")(x_deq, w_any)
    dense = is_op("relax.matmul")(x_deq, w_any)
    bias = is_const()
    b_deq = is_op("relax.dequantize")(bias, is_const(), is_const())
    body = conv | dense
    tail = QuantizeTail(body | is_op("relax.add")(body, b_deq))

    def rewriter(orig, m):
        if not is_int8(m[x]) or tail.out_dtype(m) != "int8":
            return orig
        sx, zx = qparams(m[x_scale], m[x_zp])
        sw, zw = qparams(m[w_scale], m[w_zp])
        if np.any(zw != 0):
            return orig  # TFLite int8 weights are symmetric
        sy, zy, lo, hi = tail.output(m)
        weight = _weight_value(m, m.value(w_any), const_value(m[w]))
        zx = int(zx.reshape(-1)[0])
        sx = float(sx.reshape(-1)[0])
        is_conv = conv in m
        if is_conv:
            call = m.value(conv)
            o_axis = str(call.attrs.kernel_layout).index("O")
            per_channel = tuple(a for a in range(4) if a != o_axis)   # axes summed per output
        else:
            per_channel = (0,)
        # TFLite PopulateConvolutionQuantizationParams and LiteRT's reference
        # FullyConnected[PerChannel] alike: double(sx) * double(sw) / double(sy).
        real = np.float64(sx) * sw.astype(np.float64) / np.float64(sy)
        wide = weight.astype(np.int64)
        wsum = wide.sum(axis=per_channel)
        n_out = wsum.shape[0]
        bias_v = const_value(m[bias]).astype(np.int64) if bias in m else np.zeros(n_out, np.int64)
        # |acc| per output channel: the int32 TFLite accumulates in must hold it, or its
        # result is undefined (signed overflow in C++): a corrupt bias or weights
        taps = max(abs(-128 - zx), abs(127 - zx))
        bound = taps * np.abs(wide).sum(axis=per_channel) + np.abs(bias_v)
        if np.any(bound >= 2**31):
            c = int(np.argmax(bound))
            layer = "convolution" if is_conv else "fully connected layer"
            raise ModelError(f"output channel {c} of a {layer} accumulates up to "
                             f"{int(bound[c])} (bias {int(bias_v[c])}), past int32, where "
                             "TFLite's integer result is undefined")
        folded = (bias_v - zx * wsum).astype(np.int32)
        data = m[x]
        w_const = iconst(weight, "int8")
        if is_conv:
            acc = _int_conv2d(data, w_const, call.attrs, zx)
        else:
            acc = R.matmul(data, w_const, out_dtype="int32")
        acc = R.add(acc, iconst(folded, "int32"))
        real = np.broadcast_to(real, (n_out,))
        if is_conv:
            return requantize_output(acc, real, zy, lo, hi, bound=int(bound.max()))
        return finish(round_multiply_double(acc, real), zy, lo, hi)

    return [(tail.root, rewriter)]


def _weight_value(m, w_expr, raw: np.ndarray) -> np.ndarray:
    """The int8 weight as the float program used it: apply permute_dims / reshape at compile time."""
    if w_expr.op.name == "relax.reshape":
        shape = [int(v) for v in w_expr.ty.shape.values]
        return _weight_value(m, m.resolve(w_expr.args[0]), raw).reshape(shape)
    src = m.resolve(w_expr.args[0])  # the dequantize's data
    if getattr(src, "op", None) is not None and src.op.name == "relax.permute_dims":
        axes = [int(a) for a in src.attrs.axes]
        return np.transpose(raw, axes)
    return raw


def _int_conv2d(data, weight, attrs, zx: int):
    pad = [int(p) for p in attrs.padding]
    if zx != 0 and any(pad):
        top, left, bottom, right = pad
        assert str(attrs.data_layout) == "NHWC"
        data = R.nn.pad(data, [0, 0, top, bottom, left, right, 0, 0], pad_value=float(zx))
        pad = [0, 0, 0, 0]
    return R.nn.conv2d(
        data,
        weight,
        strides=[int(s) for s in attrs.strides],
        padding=pad,
        dilation=[int(d) for d in attrs.dilation],
        groups=int(attrs.groups),
        data_layout=str(attrs.data_layout),
        kernel_layout=str(attrs.kernel_layout),
        out_layout=str(attrs.out_layout),
        out_dtype="int32",
    )


LowerQuantizedConv = rewrite_pass("LowerQuantizedConv", _patterns)
