"""A differential-testing campaign: random specs -> .tflite -> every target vs LiteRT's
reference kernels; failures shrunk to the smallest spec that still fails the same way.

``run_campaign`` fans the models out over worker processes (each converts, builds for every
target and runs the non-aarch64 ones), then runs all aarch64 bundles of a target in one
emulated process.  ``shrink`` greedily takes the first smaller spec
(``compile.difftest.spec.smaller``) that still fails on the target, until none does.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from compile.difftest import spec as specs
from compile.difftest.check import (Outcome, check_model, compare, is_aarch64,
                                    run_aarch64_batch)


PROCESS_DIED = "the checking process died (a signal in a native library)"


@dataclass
class ModelResult:
    seed: int
    spec: dict
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: str = ""            # the front end refused the converted model (not a target bug)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != "exact"]

    def to_json(self) -> dict:
        return {"seed": self.seed, "model": specs.describe(self.spec), "spec": self.spec,
                "skipped": self.skipped, "outcomes": [o.to_json() for o in self.outcomes]}


def convert_checked(spec: dict, path: Path) -> str:
    """Write the model; '' if the front end accepts it, else why not (not a target's fault:
    the generator made something outside the supported operators)."""
    from compile.difftest.convert import to_tflite
    from compile.errors import ModelError
    from compile.frontend import read_model

    try:
        to_tflite(spec, path)
    except Exception as err:  # noqa: BLE001  (TensorFlow's converter refused the model)
        return f"TensorFlow's converter failed: {type(err).__name__}: {str(err)[:200]}"
    try:
        read_model(path)
    except ModelError as err:
        return str(err).split(": ", 1)[-1]
    return ""


def check_spec(spec: dict, targets, work: Path, n_inputs: int, defer_aarch64: bool):
    """(ModelResult without the deferred targets, {aarch64 target: bundle or error}, inputs,
    reference)."""
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.tflite"
    result = ModelResult(spec["seed"], spec)
    result.skipped = convert_checked(spec, model)
    if result.skipped:
        return result, {}, None, None
    try:
        x, ref, outcomes, deferred = check_model(model, targets, work, n_inputs, spec["seed"],
                                                 defer_aarch64)
    except Exception as err:  # noqa: BLE001  (LiteRT itself could not run the model)
        result.skipped = f"the reference failed: {type(err).__name__}: {str(err)[:200]}"
        return result, {}, None, None
    result.outcomes = outcomes
    return result, deferred, x, ref


def _worker_check(index: int, spec: dict, targets, work: str, n_inputs: int):
    here = Path(work) / f"model{index}"
    shutil.rmtree(here, ignore_errors=True)      # a retry starts from nothing
    result, deferred, x, ref = check_spec(spec, targets, here, n_inputs, defer_aarch64=True)
    return index, result, deferred, x, ref


def fails_like(spec: dict, target: str, status: str, n_inputs: int = 4) -> bool:
    """Does ``spec`` still fail on ``target`` with ``status``?"""
    if not specs.valid(spec):
        return False
    with tempfile.TemporaryDirectory(prefix="sandglass-shrink-") as tmp:
        try:
            result, _, _, _ = check_spec(spec, [target], Path(tmp), n_inputs, False)
        except Exception:  # noqa: BLE001  (the converter refused the smaller model)
            return False
    return not result.skipped and result.outcomes[0].status == status


def shrink(spec: dict, fails, budget: int = 80, log=lambda message: None) -> dict:
    """The smallest spec found (within ``budget`` candidate checks) for which ``fails(spec)``
    still holds (``fails_like`` a target and status)."""
    best, tried = spec, 0
    improved = True
    while improved and tried < budget:
        improved = False
        for candidate in specs.smaller(best):
            if tried >= budget:
                break
            if not specs.valid(candidate) or specs.cost(candidate) >= specs.cost(best):
                continue
            tried += 1
            if fails(candidate):
                best, improved = candidate, True
                log(f"shrunk to {specs.describe(best)}")
                break
    return best


def _worker_shrink(spec: dict, target: str, status: str, n_inputs: int, budget: int) -> dict:
    return shrink(spec, lambda s: fails_like(s, target, status, n_inputs), budget)


def _quiet(log_dir: str) -> None:
    """Worker initializer: TensorFlow's and TVM's chatter goes to a log file of the worker's
    own, not over the progress display; and the worker ends with the campaign (a killed
    campaign would otherwise leave its busy workers running)."""
    import ctypes
    import os
    import signal

    try:   # Linux: PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass

    path = Path(log_dir) / f"worker-{os.getpid()}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def pool(jobs: int, log_dir: Path) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("spawn")   # TensorFlow and TVM do not survive fork
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_quiet,
                               initargs=(str(log_dir),))


def run_campaign(seeds, targets, n_inputs: int = 4, jobs: int = 2, max_layers: int = 6,
                 progress=None, log_dir: Path | None = None) -> list[ModelResult]:
    """Check every seed's random model (``spec.random_spec``) on every target."""
    return check_specs([specs.random_spec(s, max_layers) for s in seeds], targets, n_inputs,
                       jobs, progress, log_dir)


def _run_pool(jobs, logs, indices, models, targets, work, n_inputs, finished) -> list[int]:
    """Check ``indices`` of ``models`` in a pool, at most ``jobs`` at a time.  If a worker
    dies (a segfault in a native library breaks the whole pool), the models that were in
    flight are returned as suspects and the rest go on in a fresh pool."""
    queue, suspects = list(indices), []
    while queue:
        running: dict = {}
        taken: set[int] = set()          # submitted (or being submitted), not finished
        try:
            with pool(jobs, logs) as workers:
                while queue or running:
                    while queue and len(running) < jobs:
                        i = queue.pop(0)
                        taken.add(i)
                        running[workers.submit(_worker_check, i, models[i], list(targets),
                                               str(work), n_inputs)] = i
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = running.pop(future)
                        finished(*future.result())
                        taken.discard(index)
        except BrokenProcessPool:
            suspects += sorted(taken)
    return suspects


def _per_target(index: int, models, targets, work: Path, n_inputs: int, logs: Path):
    """A model that kills its checking process, checked one target at a time, each in a
    process of its own: the targets that kill it are crashes, the others get their outcomes.
    Returns ``finished``'s arguments after the index."""
    spec = models[index]
    result = ModelResult(spec["seed"], spec)
    deferred, x, ref = {}, None, None
    for target in targets:
        got: dict = {}

        def one(_index, r, d, x_, ref_):
            got.update(result=r, deferred=d, x=x_, ref=ref_)

        if _run_pool(1, logs, [index], models, [target], work, n_inputs, one):
            result.outcomes.append(Outcome(target, "crash", PROCESS_DIED))
            continue
        result.skipped = got["result"].skipped
        result.outcomes += got["result"].outcomes
        deferred.update(got["deferred"])
        x, ref = (got["x"], got["ref"]) if got["x"] is not None else (x, ref)
    return result, deferred, x, ref


def check_specs(models: list[dict], targets, n_inputs: int = 4, jobs: int = 2, progress=None,
                log_dir: Path | None = None) -> list[ModelResult]:
    """Check every spec on every target.  ``progress(result, outcomes, done)``: after a
    model's conversion, builds and non-aarch64 runs (``done`` True), then once more per
    aarch64 outcome after the batched emulator runs (``done`` False)."""
    results: dict[int, ModelResult] = {}
    pending: dict[str, list] = {t: [] for t in targets if is_aarch64(t)}
    work = Path(tempfile.mkdtemp(prefix="sandglass-difftest-"))
    logs = log_dir or work / "logs"

    def finished(index, result, deferred, x, ref):
        results[index] = result
        for target, bundle in deferred.items():
            pending[target].append((result, bundle, x, ref))
        if progress:
            progress(result, result.outcomes, True)

    try:
        suspects = _run_pool(jobs, logs, range(len(models)), models, targets, work, n_inputs,
                             finished)
        for index in suspects:      # each alone: which of them kills its process?
            if _run_pool(1, logs, [index], models, targets, work, n_inputs, finished):
                finished(index, *_per_target(index, models, targets, work, n_inputs, logs))
        for target, items in pending.items():   # one emulator start per aarch64 target
            outs = run_aarch64_batch(target, [(b, x) for _, b, x, _ in items])
            for (result, _, _, ref), out in zip(items, outs):
                outcome = compare(target, ref, out)
                result.outcomes.append(outcome)
                result.outcomes.sort(key=lambda o: list(targets).index(o.target))
                if progress:
                    progress(result, [outcome], False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [results[i] for i in range(len(models))]


def shrink_failures(results: list[ModelResult], n_inputs: int, budget: int, jobs: int,
                    progress=None, log_dir: Path | None = None) -> list[dict]:
    """One regression case per failing (model, target): the shrunk spec and what it found."""
    todo = [(r, o) for r in results for o in r.failures if o.detail != PROCESS_DIED]
    # a model that kills its process is kept whole: shrinking it would kill the shrinker
    cases = [_case(r, o, r.spec) for r in results for o in r.failures
             if o.detail == PROCESS_DIED]
    with tempfile.TemporaryDirectory(prefix="sandglass-shrink-") as tmp, \
            pool(jobs, log_dir or Path(tmp)) as workers:
        futures = {workers.submit(_worker_shrink, r.spec, o.target, o.status, n_inputs, budget):
                   (r, o) for r, o in todo}
        for future in as_completed(futures):
            r, o = futures[future]
            cases.append(_case(r, o, future.result()))
            if progress:
                progress(cases[-1])
    return cases


def _case(r: ModelResult, o: Outcome, small: dict) -> dict:
    return {"found": {"seed": r.seed, "target": o.target, "status": o.status,
                      "detail": o.detail, "model": specs.describe(r.spec)},
            "model": specs.describe(small), "spec": small}


def case_name(case: dict) -> str:
    f = case["found"]
    return f"seed{f['seed']}-{f['target']}-{f['status']}"


def save_case(case: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{case_name(case)}.json"
    path.write_text(json.dumps(case, indent=1) + "\n")
    return path


def summary(results: list[ModelResult], targets) -> dict:
    counts = {t: {s: 0 for s in ("exact", "mismatch", "refused", "crash")} for t in targets}
    for r in results:
        for o in r.outcomes:
            counts[o.target][o.status] += 1
    checked = [r for r in results if not r.skipped]
    return {"generated": len(results), "checked": len(checked),
            "skipped": len(results) - len(checked), "targets": list(targets),
            "runs": sum(len(r.outcomes) for r in results),
            "mismatches": sum(c["mismatch"] for c in counts.values()),
            "build_failures": sum(c["refused"] + c["crash"] for c in counts.values()),
            "per_target": counts,
            "failing_models": [r.seed for r in results if r.failures]}
