"""Integer lowering: int8 TFLite models as integer-only Relax programs, bit-exact with LiteRT.

`from_tflite` imports int8 operators as dequantize -> float op -> quantize. The passes here
rewrite those chains into TFLite's own integer reference arithmetic (int32 accumulation,
QuantizeMultiplier/MultiplyByQuantizedMultiplier requantization, zero points folded at compile
time), so that no float arithmetic remains between an int8 input and an int8 output. Where
LiteRT's *reference* kernels deviate from that scheme (FULLY_CONNECTED rounds acc * scale in
double; SOFTMAX is gemmlowp fixed point) the lowering follows LiteRT, exactly, in integers.
Spec: https://ai.google.dev/edge/litert/models/quantization_spec

Lowered: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, MEAN, AVERAGE_POOL_2D,
SOFTMAX, CONCATENATION, requantization, fused RELU/RELU6; MAX_POOL_2D, PAD, RESHAPE,
STRIDED_SLICE, SPLIT are imported as integer ops already.

Public interface:
    integer_pipeline() -> tvm.transform.Pass   (IRModule -> IRModule)
    lower_tflite(path) -> IRModule              (import + integer_pipeline)
    import_tflite(path) -> IRModule             (import only, int8 data-movement ops allowed)
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from compile.errors import ModelError
from compile.lower.cleanup import FoldRequantize, IntegerClipBounds, LowerQuantizedConcat
from compile.lower.conv import LowerQuantizedConv
from compile.lower.elementwise import LowerQuantizedElementwise
from compile.lower.pool import LowerQuantizedPool
from compile.lower.softmax import LowerQuantizedSoftmax
from compile.lower.importer import import_tflite

__all__ = [
    "integer_pipeline", "lower_tflite", "import_tflite",
    "LowerQuantizedConv", "LowerQuantizedElementwise", "LowerQuantizedPool",
    "LowerQuantizedSoftmax", "LowerQuantizedConcat", "FoldRequantize", "IntegerClipBounds",
]


# A model a pass cannot compile (a scale outside what it computes exactly, ...) raises
# ModelError inside the pass; registered, it comes back out of TVM's FFI as itself.
tvm_ffi.register_error(ModelError)


def integer_pipeline() -> tvm.transform.Pass:
    """Operator lowerings first (each consumes its own dequantize/quantize pair), then the
    remaining quantize(dequantize(...)) pairs, clip bounds, and the dead float bindings."""
    return tvm.transform.Sequential(
        [
            LowerQuantizedConv,
            LowerQuantizedElementwise,
            LowerQuantizedPool,
            LowerQuantizedSoftmax,
            LowerQuantizedConcat,
            FoldRequantize,
            IntegerClipBounds,
            relax.transform.DeadCodeElimination(),
        ],
        name="sandglass.IntegerPipeline",
    )


def lower_tflite(path) -> tvm.IRModule:
    """Import a .tflite file and lower it to an integer program."""
    return integer_pipeline()(import_tflite(path))
