"""Reference outputs: run a .tflite model with LiteRT (ai-edge-litert).

`reference=True` selects LiteRT's *reference* kernels (OpResolverType.BUILTIN_REF), the
bit-exactness reference for sandglass: XNNPACK / optimized kernels requantize int8 with a
different rounding (https://ai.google.dev/edge/litert/models/quantization_spec).
"""

from __future__ import annotations

import time

import numpy as np


def run_litert(model_path, inputs: np.ndarray, reference: bool = True) -> np.ndarray:
    """Run a single-input, single-output model on a batch: inputs (N, ...) -> outputs (N, ...).

    One invoke per sample (the model's batch dimension is 1).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interp = Interpreter(model_path=str(model_path), experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    inputs = np.asarray(inputs)
    if inputs.dtype != inp["dtype"]:
        raise ValueError(f"model input dtype is {np.dtype(inp['dtype'])}, got {inputs.dtype}")
    results = []
    for sample in inputs:
        interp.set_tensor(inp["index"], sample.reshape(inp["shape"]))
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).reshape(out["shape"][1:]).copy())
    return np.stack(results)


def litert_invoke(model_path, sample: np.ndarray, threads: int):
    """``interpreter.invoke`` of ``model_path`` with LiteRT's default op resolver (XNNPACK +
    optimized kernels: the speed reference, not the bit-exactness one), ``sample`` set as its
    input and one warm-up inference done."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path), num_threads=threads)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], np.asarray(sample).reshape(detail["shape"]))
    interp.invoke()  # warm-up
    return interp.invoke


def litert_times_ms(model_path, sample: np.ndarray, repeats: int, threads: int) -> list[float]:
    """Wall-clock ms of ``repeats`` invokes (after one warm-up) of ``litert_invoke``."""
    invoke = litert_invoke(model_path, sample, threads)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return times
