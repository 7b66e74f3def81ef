"""Measuring: LiteRT's outputs and timings for a .tflite model (ai-edge-litert), the one
wall-clock timing loop every benchmark uses (``seconds``), the inputs a model is checked on
(``validation_inputs``) and how a target's outputs are compared with LiteRT's (``compare``).

`reference=True` selects LiteRT's *reference* kernels (OpResolverType.BUILTIN_REF), the
bit-exactness reference for sandglass: XNNPACK / optimized kernels requantize int8 with a
different rounding (https://ai.google.dev/edge/litert/models/quantization_spec).
"""

from __future__ import annotations

import time

import numpy as np

from compile.frontend import ModelInfo


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
    """Wall-clock ms of ``repeats`` invokes (after one more warm-up) of ``litert_invoke``."""
    return [t * 1e3 for t in seconds(litert_invoke(model_path, sample, threads), repeats)]


def seconds(fn, runs: int) -> list[float]:
    """Wall-clock seconds of each of ``runs`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, runs: int) -> float:
    """Median wall-clock seconds of ``runs`` calls of ``fn`` after one warm-up call."""
    return float(np.median(seconds(fn, runs)))


ROUNDS = 10   # variants timed in turns: a slow phase of the machine hits all alike


def interleaved_medians_ms(fns: dict, runs: int) -> dict:
    """Median ms of ``runs`` calls of each of ``fns`` (name -> callable), timed in ``ROUNDS``
    turns of ``runs / ROUNDS`` calls each, so that they share the machine's slow and fast
    phases (a shared machine drifts over the seconds a benchmark takes)."""
    times: dict = {name: [] for name in fns}
    for turn in range(ROUNDS):
        for name, fn in fns.items():
            times[name] += seconds(fn, runs // ROUNDS + (turn < runs % ROUNDS))
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


RANDOM_SEED = 0


def is_image(info: ModelInfo) -> bool:
    """NHWC, square, 1 or 3 channels: fed with Fashion-MNIST test images."""
    shape = info.input.shape
    return len(shape) == 4 and shape[1] == shape[2] and shape[3] in (1, 3)


def validation_inputs(info: ModelInfo, n: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(N inputs in the model's dtype, labels or None, description of the data)."""
    if not is_image(info):
        from compile.frontend import example_input
        return example_input(info, n, RANDOM_SEED), None, f"random (seed {RANDOM_SEED})"
    from keras_model.data import load_dataset, quantize_input

    _, size, _, channels = info.input.shape
    x, y = load_dataset("test", size, channels, limit=n)
    if info.input.dtype == "int8":
        x = quantize_input(x, info.input.scale, info.input.zero_point)
    return x.astype(info.input.dtype), y, "Fashion-MNIST test"


def compare(reference: np.ndarray, actual: np.ndarray) -> dict:
    """Agreement of target outputs with the reference outputs, per sample and per value
    (differences in output LSB for int8 outputs)."""
    if reference.shape != actual.shape or reference.dtype != actual.dtype:
        return {"bit_exact": False, "reason": f"got {actual.dtype}{list(actual.shape)}, "
                f"expected {reference.dtype}{list(reference.shape)}"}
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    act = actual.reshape(len(actual), -1).astype(np.float64)
    diff = np.abs(ref - act)
    unit = "lsb" if reference.dtype == np.int8 else "value"
    return {
        "top1_agreement_pct": float(100.0 * np.mean(ref.argmax(1) == act.argmax(1))),
        "equal_values_pct": float(100.0 * np.mean(diff == 0)),
        "mismatched_values": int(np.count_nonzero(diff)),
        f"max_abs_diff_{unit}": float(diff.max()),
        f"rmse_{unit}": float(np.sqrt(np.mean(diff ** 2))),
        "bit_exact": bool(np.array_equal(reference, actual)),
    }
