"""Measurements of one model on one target, through the compiler's own CLIs.

Each step is a subprocess of a project CLI, exactly as a user would type it (the report records the
commands): ``compile/build.py`` (bundle, cached), ``compile/run.py`` (outputs + the backend's metrics),
``compile/bench.py`` (latency / instructions vs LiteRT, when present). LiteRT's reference kernels give the
expected outputs (``compile.reference.run_litert``); TFLite Micro's host interpreter gives its arena.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BUILD_TIMEOUT_S = 3600
RUN_TIMEOUT_S = 3600


class StepFailed(RuntimeError):
    """A CLI step failed; the message is one line (the CLI's own error line when it printed one)."""

    def __init__(self, command: list[str], message: str):
        super().__init__(message)
        self.command = shlex.join(command)


def _cli(script: str, args: list[str], log: list[str], timeout: float, env: dict | None = None) -> str:
    """Run ``python <script> args`` from the repo root; stdout, or StepFailed with its error line."""
    command = [PYTHON, script, *args]
    log.append(shlex.join(["python", script, *args]))
    full_env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        raise StepFailed(command, f"{script} took longer than {timeout:.0f} s; stopped") from None
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr or proc.stdout).strip().splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("error:")]
        message = errors[-1] if errors else (lines[-1] if lines else "no output")
        raise StepFailed(command, f"{script} exit {proc.returncode}: {message[:400]}")
    return proc.stdout


# what a bundle is built from besides the model: the compiler, the firmware templates, the board files
COMPILER_SOURCES = ("compile", "firmware", "targets")
STAMP = "harness-stamp.json"


def compiler_fingerprint() -> str:
    """sha256 over the compiler's sources (``COMPILER_SOURCES``): a bundle built by other code is stale."""
    digest = hashlib.sha256()
    for top in COMPILER_SOURCES:
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def bundle_is_current(bundle: Path, model_sha256: str) -> bool:
    """True when ``bundle`` holds a build of exactly this model file by exactly this compiler."""
    try:
        manifest = json.loads((bundle / "bundle.json").read_text())
        stamp = json.loads((bundle / STAMP).read_text())
        return (manifest["model"]["sha256"] == model_sha256
                and stamp == {"model_sha256": model_sha256, "compiler": compiler_fingerprint()})
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_bundle(model: Path, model_sha256: str, target: str, bundle: Path, reuse: bool,
                 log: list[str]) -> dict:
    """Build (or reuse, when ``reuse`` and it is current) the bundle; returns its manifest."""
    if not (reuse and bundle_is_current(bundle, model_sha256)):
        bundle.parent.mkdir(parents=True, exist_ok=True)
        fingerprint = compiler_fingerprint()
        _cli("compile/build.py", ["--target", target, "--model", str(model), "--out", str(bundle)], log,
             BUILD_TIMEOUT_S)
        (bundle / STAMP).write_text(json.dumps({"model_sha256": model_sha256, "compiler": fingerprint}))
    else:
        log.append(f"# reused {bundle} (same model sha256 and compiler sources)")
    return json.loads((bundle / "bundle.json").read_text())


def run_bundle(target: str, bundle: Path, inputs: np.ndarray, work: Path, log: list[str],
               opts: dict | None = None) -> tuple[np.ndarray, dict]:
    """``compile/run.py`` on ``inputs``: (outputs, metrics JSON). ``work`` keeps in.npy, out.npy and
    metrics.json, so the logged command can be rerun as it is."""
    work.mkdir(parents=True, exist_ok=True)
    x, y, j = (work / n for n in ("in.npy", "out.npy", "metrics.json"))
    np.save(x, inputs)
    for f in (y, j):
        f.unlink(missing_ok=True)
    opt_args = [a for k, v in (opts or {}).items() for a in ("--opt", f"{k}={json.dumps(v)}")]
    _cli("compile/run.py", ["--target", target, "--bundle", str(bundle), "--input", str(x),
                            "--output", str(y), "--json", str(j), *opt_args], log, RUN_TIMEOUT_S)
    return np.load(y), json.loads(j.read_text())


def aarch64_instructions(target: str, bundle: Path, model: Path, repeat: int, log: list[str]) -> dict:
    """``compile/bench.py`` on a linux-aarch64 bundle: guest instructions per inference under qemu-user for
    the TVM bundle and LiteRT's aarch64 wheel (keys ``tvm``, ``litert-xnnpack``, ``litert-builtin``)."""
    with tempfile.TemporaryDirectory(prefix="sandglass-harness-") as tmp:
        j = Path(tmp) / "bench.json"
        _cli("compile/bench.py", ["--target", target, "--bundle", str(bundle), "--model", str(model),
                                  "--repeat", str(repeat), "--json", str(j)], log, RUN_TIMEOUT_S)
        return json.loads(j.read_text())


def compare(outputs: np.ndarray, expected: np.ndarray) -> dict:
    """Bit-exact agreement of ``outputs`` with ``expected`` (same shape and dtype, every element)."""
    same_shape = outputs.shape == expected.shape and outputs.dtype == expected.dtype
    if not same_shape:
        return {"equal": False, "reason": f"got {outputs.dtype}{list(outputs.shape)}, "
                f"expected {expected.dtype}{list(expected.shape)}"}
    diff = np.abs(outputs.astype(np.int64) - expected.astype(np.int64))
    return {"equal": bool(not diff.any()), "mismatched_elements": int((diff > 0).sum()),
            "max_abs_diff": int(diff.max(initial=0))}


def model_inputs(model: Path, n: int) -> np.ndarray:
    """``n`` Fashion-MNIST test images resized to the model input and quantized with its input scale and
    zero point (as TFLite's QUANTIZE). Models whose input is not 1 or 3 channels get seeded random int8."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(model)).get_input_details()[0]
    _, h, w, c = detail["shape"]
    scale, zero_point = detail["quantization"]
    if h == w and c in (1, 3) and detail["dtype"] == np.int8 and scale > 0:
        from keras_model.data import load_dataset, quantize_input

        images, _ = load_dataset("test", int(h), int(c), limit=n)
        return quantize_input(images, scale, zero_point)
    return np.random.default_rng(0).integers(-128, 128, size=(n, h, w, c), dtype=np.int8)


@contextmanager
def _stderr_to(path: Path):
    """Redirect file descriptor 2 (C++ logging of TFLite Micro) into ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def tflm_arena(model: Path, sample: np.ndarray) -> dict:
    """Smallest TFLite Micro arena (16 B resolution) that runs one inference, found by bisection with the
    host interpreter (each probe in a forked child); head (planned tensors) and tail (persistent structs, pointer-size dependent: a 64-bit
    host needs more than a 32-bit Cortex-M) from its RecordingMicroAllocator."""
    from tflite_micro.python.tflite_micro import runtime

    data = model.read_bytes()

    def runs(size: int, print_allocations: bool = False) -> bool:
        # In a forked child: TFLite Micro can crash (not just fail) on some too-small arenas.
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                interp = runtime.Interpreter.from_bytes(data, arena_size=size)
                interp.set_input(sample[None], 0)
                interp.invoke()
                if print_allocations:
                    interp.print_allocations()
                code = 0
            finally:
                os._exit(code)
        return os.waitpid(pid, 0)[1] == 0

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "tflm.log"
        with _stderr_to(log):
            lo, hi = 0, 1 << 16
            while not runs(hi):
                lo, hi = hi, hi * 4
                if hi > 1 << 30:
                    raise RuntimeError("TFLite Micro does not run this model with a 1 GiB arena")
            while hi - lo > 16:
                mid = (lo + hi) // 2
                if runs(mid):
                    hi = mid
                else:
                    lo = mid
            runs(hi, print_allocations=True)
        text = log.read_text()
    found = {}
    for part in ("total", "head", "tail"):
        for line in text.splitlines():
            if f"Arena allocation {part}" in line:
                found[part] = int(line.split()[-2])
    return {"arena_bytes": hi, "head_bytes": found.get("head"), "tail_bytes": found.get("tail"),
            "how": "smallest arena that runs one inference, TFLite Micro host interpreter "
                   f"({os.uname().machine}, 64-bit pointers), bisection to 16 B"}


def host_latency_litert(model: Path, sample: np.ndarray, repeats: int, threads: int) -> dict:
    """LiteRT (default op resolver: XNNPACK + optimized kernels) wall-clock ms per inference on the host."""
    from compile.reference import litert_times_ms

    times = litert_times_ms(model, sample, repeats, threads)
    return stats_ms(times, threads)


def stats_ms(times_ms: list[float], threads: int) -> dict:
    return {"median_ms": float(np.median(times_ms)), "min_ms": float(np.min(times_ms)),
            "max_ms": float(np.max(times_ms)), "runs": len(times_ms), "threads": threads}


def host_latency_tvm(bundle: Path, sample: np.ndarray, repeats: int, threads: int) -> dict:
    """TVM host bundle (``model.so``, its static entry point) wall-clock ms per inference. TVM
    sizes its thread pool from ``TVM_NUM_THREADS`` when first used, so the report sets it before
    anything imports TVM."""
    if os.environ.get("TVM_NUM_THREADS") != str(threads):
        raise RuntimeError(f"set TVM_NUM_THREADS={threads} before importing tvm")
    import tvm

    from compile.backends import host

    manifest = json.loads((bundle / "bundle.json").read_text())
    main = host.load(bundle, manifest)
    x = tvm.runtime.tensor(np.ascontiguousarray(sample.reshape(manifest["model"]["input"]["shape"])))
    main(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        main(x)
        times.append((time.perf_counter() - start) * 1e3)
    return stats_ms(times, threads)
