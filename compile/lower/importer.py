"""TFLite import for the integer lowering.

`tvm.relax.frontend.tflite.from_tflite` refuses some int8 operators that are pure data movement
(PAD, STRIDED_SLICE, SPLIT, ...): its converters for them never touch the values, so running them
directly on int8 tensors is exact (TFLite requires equal input/output quantization for them; PAD
fills with the input zero point). This converter widens that allow-list, and reads a tensor
quantized with a single scale as per-tensor whatever its QuantizedDimension: TensorFlow's converter
writes the channel axis (3) for the one-channel per-channel weights of a depthwise conv over one
channel, which TVM's importer refuses for a per-tensor scale although the axis means nothing there.
A FULLY_CONNECTED whose input has more than two dimensions ([1, 1, 1, C] after a MEAN that keeps
them) gets TFLite's output shape [1, units]: TVM's converter keeps the input's leading dimensions,
and a later CONCATENATION along axis 1 of such tensors fails to import.
"""

from __future__ import annotations

from pathlib import Path

from tvm import relax
from tvm.relax.frontend.tflite import tflite_frontend

# int8 operators whose TVM converters are exact on integer tensors (data movement only).
INTEGER_EXACT_OPS = frozenset(
    {"PAD", "PADV2", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "SQUEEZE", "TRANSPOSE", "SLICE",
     "EXPAND_DIMS", "PACK", "UNPACK", "GATHER", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"}
)


class IntegerOperatorConverter(tflite_frontend.OperatorConverter):
    _SUPPORTED_QUANTIZED_OPS = tflite_frontend.OperatorConverter._SUPPORTED_QUANTIZED_OPS | INTEGER_EXACT_OPS

    def convert_fully_connected(self, op):
        out = super().convert_fully_connected(op)
        (output,) = self.get_output_tensors(op)
        shape = [int(d) for d in self.get_tensor_shape(output)]
        if [int(d) for d in self._infer_shape(out)] != shape:
            out = relax.op.reshape(out, shape)
        return out

    def get_tensors(self, tensors_idx_list):
        tensors = super().get_tensors(tensors_idx_list)
        for tensor in tensors:
            qnn = getattr(tensor, "qnn_params", None)
            if qnn and tensor.tensor.Quantization().ScaleLength() == 1:   # per-tensor
                qnn["axis"] = 0
        return tensors


def import_tflite(path):
    """Import a .tflite file into a Relax IRModule (weights are inline constants)."""
    import tflite

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    return tflite_frontend.from_tflite(model, op_converter=IntegerOperatorConverter)
