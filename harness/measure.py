"""Measurements of one model on one target, through the compiler's own CLIs.

Each step is a subprocess of a project CLI, exactly as a user would type it from the repository root (the
report records the commands, with repo-relative paths): ``compile/build.py`` (bundle, cached),
``compile/run.py`` (outputs + the backend's metrics), ``compile/bench.py`` (instructions vs LiteRT under
qemu-user). Host latencies are timed in this process with ``compile.measure.seconds``.

Every command, its duration and, when it fails, the end of its output go to the ``harness`` logger (the
report's log file), not to the terminal.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from compile.paths import REPO
from harness.paths import repo_relative

PYTHON = sys.executable
BUILD_TIMEOUT_S = 3600
RUN_TIMEOUT_S = 3600
LOG_TAIL_LINES = 30   # lines of a failed command's output kept in the log
log = logging.getLogger(__name__)


class StepFailed(RuntimeError):
    """A CLI step failed; the message is one line (the CLI's own error line when it printed one)."""

    def __init__(self, command: list[str], message: str):
        super().__init__(message)
        self.command = shlex.join(command)


def _cli(script: str, args: list[str], commands: list[str], timeout: float, keep_stderr: bool = False) -> str:
    """Run ``python <script> args`` from the repo root; stdout, or StepFailed with its error line. With
    ``keep_stderr`` what it printed to stderr goes to the log when it succeeds too."""
    shown = ["python", script, *args]
    commands.append(shlex.join(shown))
    log.info("$ %s", shlex.join(shown))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([PYTHON, script, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        log.info("  stopped after %.0f s: %s", timeout, shlex.join(shown))
        raise StepFailed(shown, f"{script} took longer than {timeout:.0f} s; stopped") from None
    log.info("  exit %d after %.1f s: %s", proc.returncode, time.perf_counter() - start, shlex.join(shown))
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr or proc.stdout).strip().splitlines() if l.strip()]
        for line in lines[-LOG_TAIL_LINES:]:
            log.info("  | %s", line)
        errors = [l for l in lines if l.startswith("error:")]
        message = errors[-1] if errors else (lines[-1] if lines else "no output")
        raise StepFailed(shown, f"{script} exit {proc.returncode}: {message[:400]}")
    for line in (proc.stderr.splitlines() if keep_stderr else []):
        log.info("  | %s", line)
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


def _stamp(model_sha256: str, fingerprint: str, options: Sequence[str]) -> dict:
    """What a bundle was built from; without options, as stamps always were."""
    stamp = {"model_sha256": model_sha256, "compiler": fingerprint}
    return {**stamp, "options": list(options)} if options else stamp


def bundle_is_current(bundle: Path, model_sha256: str, options: Sequence[str] = ()) -> bool:
    """True when ``bundle`` holds a build of exactly this model file by exactly this compiler, with these
    ``compile/build.py`` options."""
    try:
        manifest = json.loads((bundle / "bundle.json").read_text())
        stamp = json.loads((bundle / STAMP).read_text())
        return (manifest["model"]["sha256"] == model_sha256
                and stamp == _stamp(model_sha256, compiler_fingerprint(), options))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_bundle(model: Path, model_sha256: str, target: str, bundle: Path, reuse: bool,
                 commands: list[str], options: Sequence[str] = ()) -> dict:
    """Build (or reuse, when ``reuse`` and it is current) the bundle, ``options`` added to the build
    command; returns its manifest."""
    if not (reuse and bundle_is_current(bundle, model_sha256, options)):
        bundle.parent.mkdir(parents=True, exist_ok=True)
        fingerprint = compiler_fingerprint()
        _cli("compile/build.py", ["--target", target, "--model", repo_relative(model),
                                  "--out", repo_relative(bundle), *options], commands, BUILD_TIMEOUT_S,
             keep_stderr="--tune-trials" in options)   # what it measured, which choices it took and why
        (bundle / STAMP).write_text(json.dumps(_stamp(model_sha256, fingerprint, options)))
    else:
        note = f"# reused {repo_relative(bundle)} (same model sha256, compiler sources and build options)"
        commands.append(note)
        log.info("%s", note)
    return json.loads((bundle / "bundle.json").read_text())


def run_bundle(target: str, bundle: Path, inputs: np.ndarray, work: Path, commands: list[str],
               opts: dict | None = None) -> tuple[np.ndarray, dict]:
    """``compile/run.py`` on ``inputs``: (outputs, metrics JSON). ``work`` keeps in.npy, out.npy and
    metrics.json, so the logged command can be rerun as it is."""
    work.mkdir(parents=True, exist_ok=True)
    x, y, j = (work / n for n in ("in.npy", "out.npy", "metrics.json"))
    np.save(x, inputs)
    for f in (y, j):
        f.unlink(missing_ok=True)
    opt_args = [a for k, v in (opts or {}).items() for a in ("--opt", f"{k}={json.dumps(v)}")]
    _cli("compile/run.py", ["--target", target, "--bundle", repo_relative(bundle), "--input", repo_relative(x),
                            "--output", repo_relative(y), "--json", repo_relative(j), *opt_args],
         commands, RUN_TIMEOUT_S)
    return np.load(y), json.loads(j.read_text())   # run.py records the bundle as given


def aarch64_instructions(target: str, bundle: Path, model: Path, repeat: int, work: Path,
                         commands: list[str]) -> dict:
    """``compile/bench.py`` on a linux-aarch64 bundle: guest instructions per inference under qemu-user for
    the TVM bundle and LiteRT's aarch64 wheel (keys ``tvm``, ``litert-xnnpack``, ``litert-builtin``).
    ``work`` keeps bench.json, so the logged command can be rerun as it is."""
    work.mkdir(parents=True, exist_ok=True)
    j = work / "bench.json"
    j.unlink(missing_ok=True)
    _cli("compile/bench.py", ["--target", target, "--bundle", repo_relative(bundle), "--model",
                              repo_relative(model), "--repeat", str(repeat), "--json", repo_relative(j)],
         commands, RUN_TIMEOUT_S)
    return json.loads(j.read_text())


def stats_ms(times_ms: list[float], threads: int) -> dict:
    return {"median_ms": float(np.median(times_ms)), "min_ms": float(np.min(times_ms)),
            "max_ms": float(np.max(times_ms)), "runs": len(times_ms), "threads": threads}


def host_latency_litert(model: Path, sample: np.ndarray, repeats: int, threads: int) -> dict:
    """LiteRT (default op resolver: XNNPACK + optimized kernels) wall-clock ms per inference on the host."""
    from compile.measure import litert_times_ms

    return stats_ms(litert_times_ms(model, sample, repeats, threads), threads)


def host_latency_tvm(bundle: Path, sample: np.ndarray, repeats: int, threads: int) -> dict:
    """TVM host bundle (``model.so``, its static entry point) wall-clock ms per inference. TVM
    sizes its thread pool from ``TVM_NUM_THREADS`` when first used, so the report sets it before
    anything imports TVM."""
    if os.environ.get("TVM_NUM_THREADS") != str(threads):
        raise RuntimeError(f"set TVM_NUM_THREADS={threads} before importing tvm")
    import tvm

    from compile.backends import host
    from compile.measure import seconds

    manifest = json.loads((bundle / "bundle.json").read_text())
    main = host.load(bundle, manifest)
    x = tvm.runtime.tensor(np.ascontiguousarray(sample.reshape(manifest["model"]["input"]["shape"])))
    return stats_ms([t * 1e3 for t in seconds(lambda: main(x), repeats)], threads)
