"""Differential check of one ``.tflite`` on the targets: LiteRT's reference kernels vs each
target's bundle, bit for bit.

``check_model`` builds a bundle per target (``compile.backends.build_bundle``) and runs it
(``compile.backends.run_bundle``); the aarch64 targets can be left for ``run_aarch64_batch``,
which runs many bundles in one emulated process.  Every target gets an ``Outcome``:

* ``exact``     the outputs equal the reference's, bit for bit;
* ``mismatch``  a wrong answer (the worst defect a compiler can have);
* ``refused``   the compiler said no with a one-line user error (``error:`` on the CLI);
* ``crash``     anything else: an exception with a traceback, a firmware that does not build.

For a model the front end accepts, anything but ``exact`` is a failure.
"""
from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ALL_TARGETS = ("host", "rpi4", "mps2-an386", "mps2-an500", "mps3-an547")


@dataclass
class Outcome:
    target: str
    status: str            # exact | mismatch | refused | crash
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def is_aarch64(target_name: str) -> bool:
    from compile.targets import get_target

    return get_target(target_name).kind == "linux-aarch64"


def make_inputs(model: Path, n: int, seed: int) -> np.ndarray:
    """``n`` inputs: uniform int8 over the whole range (saturation included), or float32 from
    N(0, 1.5) for a float input (a little wider than the calibration data)."""
    from compile.frontend import read_model

    _, info = read_model(model)
    rng = np.random.default_rng(seed)
    shape = (n, *info.input.shape[1:])
    if info.input.dtype == "int8":
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return (rng.normal(0.0, 1.5, size=shape)).astype(np.float32)


def compare(target: str, reference: np.ndarray, actual) -> Outcome:
    """``actual`` (outputs, or the exception that stopped the target) against the reference."""
    from compile.measure import compare as agreement_of

    if isinstance(actual, Exception):
        return failure(target, actual)
    got = agreement_of(reference, np.asarray(actual))
    if got["bit_exact"]:
        return Outcome(target, "exact")
    if "reason" in got:
        return Outcome(target, "mismatch", got["reason"])
    max_diff = next(v for k, v in got.items() if k.startswith("max_abs_diff"))
    return Outcome(target, "mismatch", f"{got['equal_values_pct']:.1f} % of values equal, "
                   f"max |diff| {max_diff:g}")


def failure(target: str, err: Exception) -> Outcome:
    from compile.errors import user_errors   # what the CLIs print as one error: line

    if isinstance(err, user_errors()):
        return Outcome(target, "refused", " ".join(str(err).split())[:300])
    return Outcome(target, "crash", where(err))


def where(err: BaseException) -> str:
    """One line for an exception that is a bug: its type, the file and line it was raised at,
    the last line of its message."""
    frames = traceback.extract_tb(err.__traceback__)
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    last = (str(err).strip().splitlines() or [""])[-1][:240]
    return f"{type(err).__name__}{place}: {last}"


def try_build(model: Path, target: str, out: Path):
    """The bundle path, or the exception that stopped its build."""
    from compile.backends import build_bundle

    try:
        return build_bundle(model, target, out, {}, "compile.difftest")
    except Exception as err:  # noqa: BLE001  (every failure is an outcome here)
        return err


def check_model(model: Path, targets, work_dir: Path, n_inputs: int = 4, seed: int = 0,
                defer_aarch64: bool = False):
    """(inputs, reference outputs, outcomes of the targets checked, bundles left to run
    {aarch64 target: bundle or exception} when ``defer_aarch64``)."""
    from compile.measure import run_litert
    from compile.backends import run_bundle

    x = make_inputs(model, n_inputs, seed)
    reference = run_litert(model, x, reference=True)
    outcomes, deferred = [], {}
    for target in targets:
        bundle = try_build(model, target, Path(work_dir) / f"bundle-{target}")
        if defer_aarch64 and is_aarch64(target):
            deferred[target] = bundle
            continue
        if not isinstance(bundle, Exception):
            try:
                # outputs only: no trace, no cycle estimate
                bundle = run_bundle(bundle, target, x, {"estimate": "0"})[0]
            except Exception as err:  # noqa: BLE001
                bundle = err
        outcomes.append(compare(target, reference, bundle))
    return x, reference, outcomes, deferred


def run_aarch64_batch(target: str, jobs: list[tuple[Path, np.ndarray]]) -> list:
    """Per job (bundle or build exception, inputs): outputs or an exception, all bundles run
    in one emulated process."""
    from compile.backends import aarch64
    from compile.bundle import read_manifest
    from compile.targets import get_target

    tgt = get_target(target)
    results: list = [None] * len(jobs)
    runnable = []
    for i, (bundle, x) in enumerate(jobs):
        if isinstance(bundle, Exception):
            results[i] = bundle
        else:
            runnable.append((i, bundle, x))
    try:
        outs = aarch64.run_batch(tgt, [(b, read_manifest(b, tgt), x) for _, b, x in runnable])
    except Exception as err:  # noqa: BLE001  (the whole batch failed: every job says why)
        outs = [err] * len(runnable)
    for (i, _, _), out in zip(runnable, outs):
        results[i] = out
    return results
