"""TFLite front end: read a ``.tflite``, check it is something we can compile, import it.

The file is read with the ``tflite`` package (Python classes generated from the TFLite
FlatBuffer schema, https://github.com/tensorflow/tensorflow/blob/master/tensorflow/compiler/
mlir/lite/schema/schema.fbs) and walked completely before TVM sees it, so that a truncated
or corrupt file, a file that is not TFLite, or an operator outside ``SUPPORTED_OPS`` is
reported as one clear ``ModelError`` instead of an assertion deep inside the importer.

Import uses ``tvm.relax.frontend.tflite.from_tflite``: int8 operators come out as
dequantize -> float op -> quantize chains (``compile.lower`` turns them into integers).
The imported ``main`` takes one sample: a dynamic batch dimension is fixed to 1, the
bundle runs N samples as N calls.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tflite
import tvm
from compile.errors import ModelError

# Builtin operator -> highest operator version we compile.  Versions are TFLite's
# (GetBuiltinOperatorVersion in tensorflow/compiler/mlir/lite/tools/versioning/op_version.cc):
# a new version marks a new feature, mostly a new tensor type, so the limit says what is in.
SUPPORTED_OPS = {
    "CONV_2D": 3,             # 1 float, 2 hybrid, 3 int8 (4+: int16, hybrid, groups, int4)
    "DEPTHWISE_CONV_2D": 3,   # 1 float, 2 float dilated, 3 int8 (4+: hybrid, int16, int4)
    "ADD": 2,                 # 1 float/uint8, 2 int8 (3+: int16, int64, float16)
    "SUB": 3,                 # 1 float/uint8, 2 int8, 3 broadcast over >4-D (4+: int64, int16)
    "MUL": 3,                 # 1 float/uint8, 2 int8, 3 int8 with rescale >= 1 (4+: int16, int64)
    "MEAN": 2,                # 1 float/uint8, 2 int8 (3: int16)
    "AVERAGE_POOL_2D": 2,     # 1 float/uint8, 2 int8 (3: int16)
    "MAX_POOL_2D": 2,         # 1 float/uint8, 2 int8 (3: int16)
    "FULLY_CONNECTED": 5,     # 1 float, 2 shuffled weights, 3 hybrid, 4 int8, 5 keep_num_dims
                              # (6+: no bias, int16, sparse, int4)
    "RESHAPE": 1,             # only version
    "SOFTMAX": 2,             # 1 float/uint8, 2 int8 (3: int16)
    "PAD": 2,                 # 1 float/uint8, 2 int8 (3+: int16, >4-D, bool)
    "CONCATENATION": 2,       # 1 float/uint8, 2 int8 (3+: int16, uint32, int4)
    "STRIDED_SLICE": 4,       # 1 float, 2 int8, 3 bool, 4 >4-D (5+: string, ellipsis/new-axis
                              # masks, uint32, offset)
    "SPLIT": 2,               # 1 float, 2 int8 (3+: int32, int16)
    "QUANTIZE": 1,            # 1 float -> int8/uint8 and int8 requantize (2+: int16, per-channel)
    "DEQUANTIZE": 2,          # 1 uint8, 2 int8 (3+: int16/float16, per-channel, int4)
}
# Fused activations allowed on the ops that have one (FlatBuffer enum ActivationFunctionType).
SUPPORTED_ACTIVATIONS = ("NONE", "RELU", "RELU6")
# Tensor dtypes we accept at the model's input and output.
IO_DTYPES = ("int8", "float32")
# Operator -> (fewest inputs, most inputs, outputs; None: any); -1 marks a left-out optional one.
ARITY = {
    "CONV_2D": (2, 3, 1), "DEPTHWISE_CONV_2D": (2, 3, 1), "FULLY_CONNECTED": (2, 3, 1),
    "ADD": (2, 2, 1), "SUB": (2, 2, 1), "MUL": (2, 2, 1), "MEAN": (2, 2, 1),
    "AVERAGE_POOL_2D": (1, 1, 1), "MAX_POOL_2D": (1, 1, 1), "RESHAPE": (1, 2, 1),
    "SOFTMAX": (1, 1, 1), "PAD": (2, 2, 1), "CONCATENATION": (1, None, 1),
    "STRIDED_SLICE": (4, 4, 1), "SPLIT": (2, 2, None), "QUANTIZE": (1, 1, 1),
    "DEQUANTIZE": (1, 1, 1),
}
# Operator -> the inputs that carry its data (all: every input); they and every output share
# one type.  The others are weights, biases, axes, shapes and paddings.
DATA_INPUTS = {
    "CONV_2D": (0,), "DEPTHWISE_CONV_2D": (0,), "FULLY_CONNECTED": (0,), "ADD": (0, 1),
    "SUB": (0, 1), "MUL": (0, 1), "MEAN": (0,), "AVERAGE_POOL_2D": (0,), "MAX_POOL_2D": (0,),
    "RESHAPE": (0,), "SOFTMAX": (0,), "PAD": (0,), "CONCATENATION": "all",
    "STRIDED_SLICE": (0,), "SPLIT": (1,),
}
# Largest tensor we compile (elements): past it a shape is corrupt or far beyond any board.
MAX_ELEMENTS = 1 << 26
# Bytes per element of the tensor types whose constant data size we can check.
ITEMSIZE = {"float32": 4, "float16": 2, "float64": 8, "int8": 1, "uint8": 1, "int16": 2,
            "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "bool": 1}
# Zero point range per quantized tensor type.
ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                    "int32": (-(2**31), 2**31 - 1), "int64": (-(2**31), 2**31 - 1)}

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_ACT_NAMES = {v: k for k, v in vars(tflite.ActivationFunctionType).items()
              if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
# Builtin options tables that carry a fused_activation_function field.
_OPTIONS_WITH_ACTIVATION = {
    tflite.BuiltinOptions.Conv2DOptions: tflite.Conv2DOptions,
    tflite.BuiltinOptions.DepthwiseConv2DOptions: tflite.DepthwiseConv2DOptions,
    tflite.BuiltinOptions.AddOptions: tflite.AddOptions,
    tflite.BuiltinOptions.SubOptions: tflite.SubOptions,
    tflite.BuiltinOptions.MulOptions: tflite.MulOptions,
    tflite.BuiltinOptions.Pool2DOptions: tflite.Pool2DOptions,
    tflite.BuiltinOptions.FullyConnectedOptions: tflite.FullyConnectedOptions,
    tflite.BuiltinOptions.ConcatenationOptions: tflite.ConcatenationOptions,
}


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output; shape has batch 1, scale/zero_point are None for floats."""
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int | None

    @classmethod
    def from_json(cls, d: dict) -> "TensorInfo":
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d["scale"], d["zero_point"])


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the compiler needs to know about a .tflite file."""
    path: str
    sha256: str
    operators: tuple[tuple[str, int], ...]   # (builtin name, version) per operator code
    input: TensorInfo
    output: TensorInfo

    def to_json(self) -> dict:
        """Plain JSON types (lists, not tuples): equal to its own json.loads(json.dumps())."""
        d = asdict(self)
        d["operators"] = [list(op) for op in self.operators]
        for key in ("input", "output"):
            d[key]["shape"] = list(d[key]["shape"])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelInfo":
        return cls(d["path"], d["sha256"], tuple((n, v) for n, v in d["operators"]),
                   TensorInfo.from_json(d["input"]), TensorInfo.from_json(d["output"]))


def load_model(path: str | Path) -> tuple[tflite.Model, ModelInfo]:
    """Parse and fully walk a .tflite; ModelError if it is not a readable TFLite model."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as err:
        raise ModelError(f"cannot read model {path}: {err.strerror}") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite model (no TFL3 FlatBuffer identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        info = _walk(model, path, len(buf), hashlib.sha256(buf).hexdigest())
    except ModelError:
        raise
    except Exception:   # flatbuffers reads past the end / through garbage offsets
        raise ModelError(f"{path} is a truncated or corrupt TFLite file") from None
    return model, info


def _walk(model: tflite.Model, path: Path, size: int, sha256: str) -> ModelInfo:
    """Touch every table the compiler reads, so a damaged file fails here."""
    if model.SubgraphsLength() != 1:
        raise ModelError(f"{path}: {model.SubgraphsLength()} subgraphs, only single-subgraph "
                         "models are supported")
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > size:
            raise ModelError(f"{path} is a truncated or corrupt TFLite file "
                             f"(buffer {b} ends past the end of the file)")
        if buffer.DataLength():
            buffer.DataAsNumpy()
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code not in _OP_NAMES:
            raise ModelError(f"{path}: unknown builtin operator code {code} "
                             "(corrupt file, or an operator newer than our TFLite schema)")
        name = _OP_NAMES[code]
        if name == "CUSTOM":
            name = f"CUSTOM:{(oc.CustomCode() or b'').decode(errors='replace')}"
        opcodes.append((name, oc.Version()))
    sg = model.Subgraphs(0)
    n_tensors = sg.TensorsLength()
    for t in range(n_tensors):
        tensor = sg.Tensors(t)
        tensor.Name().decode(), tensor.ShapeAsNumpy(), tensor.Type()
        if tensor.Buffer() >= model.BuffersLength():
            raise ModelError(f"{path} is a corrupt TFLite file "
                             f"(tensor {t} refers to a missing buffer)")
        q = tensor.Quantization()
        if q is not None:
            q.ScaleAsNumpy(), q.ZeroPointAsNumpy(), q.QuantizedDimension()
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        if op.OpcodeIndex() >= len(opcodes):
            raise ModelError(f"{path} is a corrupt TFLite file "
                             f"(operator {o} refers to a missing operator code)")
        for t in list(op.InputsAsNumpy()) + list(op.OutputsAsNumpy()):
            if not -1 <= t < n_tensors:   # -1: optional input left out
                raise ModelError(f"{path} is a corrupt TFLite file "
                                 f"(operator {o} refers to a missing tensor)")
        _fused_activation(op)
    if sg.InputsLength() != 1 or sg.OutputsLength() != 1:
        raise ModelError(f"{path}: {sg.InputsLength()} inputs and {sg.OutputsLength()} outputs, "
                         "only single-input single-output models are supported")
    for index in (sg.Inputs(0), sg.Outputs(0)):
        if not 0 <= index < n_tensors:
            raise ModelError(f"{path} is a corrupt TFLite file (the model's input or output "
                             "is a missing tensor)")
    _check_tensors(model, sg, path)
    _check_graph(model, sg, opcodes, path)
    return ModelInfo(str(path.resolve()), sha256, tuple(opcodes),
                     _tensor_info(sg, sg.Inputs(0), path), _tensor_info(sg, sg.Outputs(0), path))


def _check_tensors(model: tflite.Model, sg, path: Path) -> None:
    """Shapes, constant data sizes and quantization parameters hold numbers a model can have."""
    for t in range(sg.TensorsLength()):
        tensor = sg.Tensors(t)
        name = f"tensor {t} ('{tensor.Name().decode(errors='replace')}')"
        dtype = _TYPE_NAMES.get(tensor.Type())
        if dtype is None:
            raise ModelError(f"{path} is a corrupt TFLite file ({name} has unknown type "
                             f"{tensor.Type()})")
        shape = [int(d) for d in np.atleast_1d(tensor.ShapeAsNumpy())] \
            if tensor.ShapeLength() else []
        if any(d < 1 for d in shape) or len(shape) > 6:
            raise ModelError(f"{path}: {name} has shape {shape}; dimensions must be positive "
                             "and at most 6")
        elements = int(np.prod(shape, dtype=object)) if shape else 1
        if elements > MAX_ELEMENTS:
            raise ModelError(f"{path}: {name} has shape {shape} ({elements} elements, more than "
                             f"the {MAX_ELEMENTS} we compile)")
        data = model.Buffers(tensor.Buffer()).DataLength()
        itemsize = ITEMSIZE.get(dtype)
        if data and itemsize and data != elements * itemsize:
            raise ModelError(f"{path} is a corrupt TFLite file ({name} of shape {shape} and "
                             f"type {dtype} has {data} bytes of data, not {elements * itemsize})")
        q = tensor.Quantization()
        if q is None or not q.ScaleLength():
            continue
        scales = q.ScaleAsNumpy().astype(np.float64)
        zero_points = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(1, np.int64)
        if not np.all(np.isfinite(scales)) or not np.all(scales > 0):
            bad = next(float(v) for v in scales if not (np.isfinite(v) and v > 0))
            raise ModelError(f"{path}: {name} has quantization scale {bad}; scales must be "
                             "finite and positive")
        low, high = ZERO_POINT_RANGE.get(dtype, (-(2**31), 2**31 - 1))
        if np.any(zero_points < low) or np.any(zero_points > high):
            bad = next(int(v) for v in zero_points if not low <= v <= high)
            raise ModelError(f"{path}: {name} has zero point {bad}, outside {dtype}'s "
                             f"[{low}, {high}]")
        if len(scales) != len(zero_points) and len(zero_points) != 1:
            raise ModelError(f"{path} is a corrupt TFLite file ({name} has {len(scales)} "
                             f"scales and {len(zero_points)} zero points)")
        if len(scales) > 1:
            axis = q.QuantizedDimension()
            if not 0 <= axis < len(shape) or shape[axis] != len(scales):
                raise ModelError(f"{path} is a corrupt TFLite file ({name} of shape {shape} "
                                 f"has {len(scales)} scales along dimension {axis})")


def _check_graph(model: tflite.Model, sg, opcodes: list[tuple[str, int]], path: Path) -> None:
    """Each operator has as many inputs and outputs as its kind takes, reads only tensors
    that exist by then (constants, the model input, earlier outputs) and writes new ones."""
    ready = {sg.Inputs(0)}
    for t in range(sg.TensorsLength()):
        if model.Buffers(sg.Tensors(t).Buffer()).DataLength():   # a constant
            ready.add(t)
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        name = opcodes[op.OpcodeIndex()][0]
        inputs = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outputs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        fewest, most, n_out = ARITY.get(name, (0, None, None))
        given = [t for t in inputs if t >= 0]
        if (len(inputs) < fewest or (most is not None and len(inputs) > most)
                or (n_out is not None and len(outputs) != n_out) or not outputs
                or any(t < 0 for t in inputs[:fewest] + outputs)):
            raise ModelError(f"{path} is a corrupt TFLite file (operator {o}, {name}, has "
                             f"{len(inputs)} inputs and {len(outputs)} outputs)")
        missing = [t for t in given if t not in ready]
        if missing:
            raise ModelError(f"{path} is a corrupt TFLite file (operator {o}, {name}, reads "
                             f"tensor {missing[0]} before anything writes it)")
        _check_types(sg, name, o, inputs, outputs, path)
        written = [t for t in outputs if t in ready]
        if written:
            raise ModelError(f"{path} is a corrupt TFLite file (operator {o}, {name}, writes "
                             f"tensor {written[0]}, which already has a value)")
        ready.update(outputs)
    if sg.Outputs(0) not in ready:
        raise ModelError(f"{path} is a corrupt TFLite file (nothing writes the model's output "
                         f"tensor {sg.Outputs(0)})")


def _check_types(sg, name: str, o: int, inputs: list[int], outputs: list[int],
                 path: Path) -> None:
    """An operator's data inputs and outputs share one type, a convolution's weights have its
    input's type and its bias the accumulator's (int32 for int8, float32 for float32)."""
    data = DATA_INPUTS.get(name)
    if data is None:
        return
    positions = range(len(inputs)) if data == "all" else data
    types = {t: _TYPE_NAMES.get(sg.Tensors(t).Type()) for t in inputs + outputs if t >= 0}
    used = [inputs[i] for i in positions if i < len(inputs)] + outputs
    kinds = {types[t] for t in used}
    if len(kinds) > 1:
        raise ModelError(f"{path}: operator {o} ({name}) mixes tensor types "
                         f"{', '.join(sorted(map(str, kinds)))} between its inputs and outputs")
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        x = types[inputs[0]]
        bias = {"int8": "int32", "float32": "float32"}.get(x)
        if types[inputs[1]] != x or (len(inputs) > 2 and inputs[2] >= 0
                                     and types[inputs[2]] != bias):
            raise ModelError(f"{path}: operator {o} ({name}) on {x} data has {types[inputs[1]]} "
                             f"weights" + (f" and a {types[inputs[2]]} bias"
                                           if len(inputs) > 2 and inputs[2] >= 0 else ""))


def _tensor_info(sg, index: int, path: Path) -> TensorInfo:
    tensor = sg.Tensors(index)
    name = tensor.Name().decode()
    dtype = _TYPE_NAMES.get(tensor.Type(), f"type {tensor.Type()}")
    if dtype not in IO_DTYPES:
        raise ModelError(f"{path}: tensor '{name}' has dtype {dtype}, model inputs and outputs "
                         f"must be {' or '.join(IO_DTYPES)}")
    shape = [int(d) for d in tensor.ShapeAsNumpy()]
    if not shape or shape[0] != 1:
        raise ModelError(f"{path}: tensor '{name}' has shape {shape}, expected batch 1 first")
    scale = zero_point = None
    q = tensor.Quantization()
    if dtype == "int8":
        if q is None or q.ScaleLength() != 1 or q.ZeroPointLength() != 1:
            raise ModelError(f"{path}: int8 tensor '{name}' needs one scale and zero point")
        scale, zero_point = float(q.ScaleAsNumpy()[0]), int(q.ZeroPointAsNumpy()[0])
    return TensorInfo(name, tuple(shape), dtype, scale, zero_point)


def check_supported(model: tflite.Model, info: ModelInfo) -> None:
    """ModelError naming the first operator (and version) or fused activation we lack."""
    for name, version in info.operators:
        if name not in SUPPORTED_OPS:
            raise ModelError(f"{info.path}: unsupported operator {name} (version {version}); "
                             f"supported: {', '.join(SUPPORTED_OPS)}")
        if version > SUPPORTED_OPS[name]:
            raise ModelError(f"{info.path}: unsupported version {version} of operator {name} "
                             f"(supported: versions 1-{SUPPORTED_OPS[name]})")
    sg = model.Subgraphs(0)
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        act = _fused_activation(op)
        if act not in SUPPORTED_ACTIVATIONS:
            name = info.operators[op.OpcodeIndex()][0]
            raise ModelError(f"{info.path}: unsupported fused activation {act} on operator "
                             f"{name} (supported: {', '.join(SUPPORTED_ACTIVATIONS)})")


def _fused_activation(op: tflite.Operator) -> str:
    """Name of the operator's fused activation ("NONE" for ops without one)."""
    options_cls = _OPTIONS_WITH_ACTIVATION.get(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    if options_cls is None or table is None:
        return "NONE"
    options = options_cls()
    options.Init(table.Bytes, table.Pos)
    return _ACT_NAMES.get(options.FusedActivationFunction(), "unknown")


def import_model(model: tflite.Model, info: ModelInfo, op_converter=None) -> tvm.IRModule:
    """Relax IRModule of the model, batch 1, weights as constants (float op chains).

    ``op_converter``: a subclass of from_tflite's OperatorConverter (default: TVM's own).
    """
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.tflite import from_tflite, tflite_frontend

    def rejected(err: Exception) -> str:   # what passed our checks but not TVM's
        last = (str(err).strip().splitlines() or [""])[-1]
        return (f"{info.path}: TVM's TFLite importer rejected the model "
                f"({type(err).__name__}: {last})")

    mod = refusing_quietly(
        lambda: from_tflite(model, shape_dict={info.input.name: info.input.shape},
                            dtype_dict={info.input.name: info.input.dtype},
                            op_converter=op_converter or tflite_frontend.OperatorConverter),
        Exception, rejected)
    # from_tflite binds the weights as constants and also lists them in a "params"
    # attribute; drop that copy so it is not carried into the compiled library.
    mod, _ = detach_params(mod)
    return mod


def read_model(path: str | Path) -> tuple[tflite.Model, ModelInfo]:
    """load_model + check_supported + check_loads: everything that can be said before
    compiling."""
    model, info = load_model(path)
    check_supported(model, info)
    check_loads(model, path)
    return model, info


def check_loads(model: tflite.Model, path: str | Path) -> None:
    """ModelError unless LiteRT loads the file with its reference kernels (its FlatBuffer
    verifier, its InterpreterBuilder and every kernel's Prepare in allocate_tensors accept
    it) and computes for every tensor the shape the file declares.  The model is defined by
    what LiteRT computes, so a file LiteRT cannot run has no meaning to compile, and one
    whose declared shapes are not the computed ones (an axis or a stride changed under them)
    would be compiled to other shapes than LiteRT runs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with native_stderr() as said:
        try:
            interp = Interpreter(model_path=str(path),
                                 experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
            interp.allocate_tensors()
            why = None
        except Exception as err:  # noqa: BLE001  (whatever LiteRT raises, it refused the file)
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if why is not None:
        detail = "; ".join(line for line in said if line.strip())[:300] or why[:300]
        raise ModelError(f"{path}: LiteRT cannot load the model either ({detail})")
    sg = model.Subgraphs(0)
    for detail in interp.get_tensor_details():
        t = detail["index"]
        if t >= sg.TensorsLength():   # LiteRT's own scratch tensors
            continue
        tensor = sg.Tensors(t)
        declared = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        computed = [int(d) for d in detail["shape"]]
        if declared != computed:
            raise ModelError(f"{path}: tensor {t} ('{detail['name']}') is declared {declared} "
                             f"but LiteRT computes it as {computed}: the file contradicts "
                             "itself")


def refusing_quietly(fn, errors, message):
    """``fn()``, passing on afterwards what native code wrote to stderr meanwhile; when it
    raises one of ``errors``, ModelError(``message(err)``).  A refused import or lowering
    leaves a BlockBuilder whose destructor logs "BlockBuilder destroyed with remaining
    blocks" when it is collected: collected here, inside the capture, it is not noise next
    to the one error line."""
    refused = None
    with native_stderr() as said:
        try:
            result = fn()
        except errors as err:
            refused = message(err)
        if refused is not None:
            gc.collect()
    if refused is not None:
        raise ModelError(refused)
    for line in said:
        print(line, file=sys.stderr)
    return result


@contextlib.contextmanager
def native_stderr():
    """What native code writes to file descriptor 2 inside (LiteRT's error reporter), kept
    from the user's terminal and yielded as a list of lines, filled on exit."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            lines += f.read().decode(errors="replace").strip().splitlines()


def example_input(info: ModelInfo, n: int, seed: int = 0) -> np.ndarray:
    """N random samples in the model input's dtype and range (fixed seed)."""
    rng = np.random.default_rng(seed)
    shape = (n, *info.input.shape[1:])
    if info.input.dtype == "int8":
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return rng.random(shape, dtype=np.float32)
