"""Fully-int8 TFLite export of a (QAT) Keras model, and the integer-only check of a .tflite file.

Converter settings: https://ai.google.dev/edge/litert/models/post_training_integer_quant ("integer only"):
default optimizations, a representative dataset (ranges of anything QAT left open, e.g. the input),
``TFLITE_BUILTINS_INT8`` as the only op set and int8 input/output, so the flatbuffer holds int8 activations,
int8 weights and int32 biases only -- what TVM and the microcontrollers run.
Schema: https://github.com/tensorflow/tensorflow/blob/master/tensorflow/compiler/mlir/lite/schema/schema.fbs
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

# TensorType values of the TFLite schema that an integer-only model may use: int8 activations/weights,
# int32 biases and shape operands.
INTEGER_TYPES = {9: "INT8", 2: "INT32"}
FLOAT_OPS = {"DEQUANTIZE"}  # builtin ops that produce float tensors


class ModelError(ValueError):
    """Not a usable TFLite model: the message is one line meant for the user."""


def read_tflite(path: str | os.PathLike) -> bytes:
    """The bytes of a TFLite flatbuffer; ModelError if the file is missing or is not one."""
    try:
        buf = Path(path).read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read model {path}: {e.strerror}") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":  # file identifier of the TFLite schema
        raise ModelError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    return buf


def convert_int8(model, representative_images: np.ndarray) -> bytes:
    """Convert a Keras model (QAT or float) to a fully-int8 TFLite flatbuffer."""
    import tensorflow as tf

    def representative():
        for i in range(len(representative_images)):
            yield [representative_images[i:i + 1].astype(np.float32)]

    # From a traced inference function rather than from_keras_model: same flatbuffer ops and outputs, but no
    # SavedModel round trip (conversion of a QAT model is ~20 % faster).
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    function = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def integer_only_problems(buf: bytes) -> list[str]:
    """Why a TFLite flatbuffer is not integer-only (empty list: it is). Checks every tensor's type, every
    operator's name, and that the graph input and output are int8."""
    import tflite

    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(buf, 0)
    problems = []
    for s in range(model.SubgraphsLength()):
        g = model.Subgraphs(s)
        for t in range(g.TensorsLength()):
            tensor = g.Tensors(t)
            if tensor.Type() not in INTEGER_TYPES:
                problems.append(f"tensor {tensor.Name().decode()} has TensorType {tensor.Type()}")
        for o in range(g.OperatorsLength()):
            code = model.OperatorCodes(g.Operators(o).OpcodeIndex())
            op = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            if op in FLOAT_OPS or op == "CUSTOM":
                problems.append(f"operator {o} is {op}")
        for kind, idx in (("input", g.InputsAsNumpy()), ("output", g.OutputsAsNumpy())):
            for i in np.atleast_1d(idx):
                if g.Tensors(int(i)).Type() != 9:
                    problems.append(f"graph {kind} {g.Tensors(int(i)).Name().decode()} is not int8")
    return problems


def op_names(buf: bytes) -> list[str]:
    """Builtin operator names used by a TFLite flatbuffer, in graph order."""
    import tflite

    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(0)
    out = []
    for o in range(g.OperatorsLength()):
        code = model.OperatorCodes(g.Operators(o).OpcodeIndex())
        out.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    return out


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to path through a temp file in the same directory, then rename (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; models are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
