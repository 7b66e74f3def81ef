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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from compile.difftest import spec as specs
from compile.difftest.check import (Outcome, check_model, compare, is_aarch64,
                                    run_aarch64_batch)


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
    from compile.frontend import ModelError, read_model

    to_tflite(spec, path)
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
    x, ref, outcomes, deferred = check_model(model, targets, work, n_inputs, spec["seed"],
                                             defer_aarch64)
    result.outcomes = outcomes
    return result, deferred, x, ref


def _worker_check(seed: int, max_layers: int, targets, work: str, n_inputs: int):
    spec = specs.random_spec(seed, max_layers)
    result, deferred, x, ref = check_spec(spec, targets, Path(work) / f"seed{seed}",
                                          n_inputs, defer_aarch64=True)
    return result, deferred, x, ref


def fails_like(spec: dict, target: str, status: str, n_inputs: int) -> bool:
    """Does ``spec`` still fail on ``target`` with ``status``?"""
    if not specs.valid(spec):
        return False
    with tempfile.TemporaryDirectory(prefix="sandglass-shrink-") as tmp:
        try:
            result, _, _, _ = check_spec(spec, [target], Path(tmp), n_inputs, False)
        except Exception:  # noqa: BLE001  (the converter refused the smaller model)
            return False
    return not result.skipped and result.outcomes[0].status == status


def shrink(spec: dict, target: str, status: str, n_inputs: int = 4, budget: int = 80,
           log=lambda message: None) -> dict:
    """The smallest spec found (within ``budget`` candidate checks) failing like ``spec``."""
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
            if fails_like(candidate, target, status, n_inputs):
                best, improved = candidate, True
                log(f"shrunk to {specs.describe(best)}")
                break
    return best


def _worker_shrink(spec: dict, target: str, status: str, n_inputs: int, budget: int) -> dict:
    return shrink(spec, target, status, n_inputs, budget)


def run_campaign(seeds, targets, n_inputs: int = 4, jobs: int = 2, max_layers: int = 6,
                 progress=None) -> list[ModelResult]:
    """Check every seed's model on every target; ``progress(result)`` after each model."""
    seeds = list(seeds)
    results: dict[int, ModelResult] = {}
    pending: dict[str, list] = {t: [] for t in targets if is_aarch64(t)}
    work = Path(tempfile.mkdtemp(prefix="sandglass-difftest-"))
    ctx = multiprocessing.get_context("spawn")   # TensorFlow and TVM do not survive fork
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_worker_check, s, max_layers, list(targets), str(work),
                                   n_inputs): s for s in seeds}
            for future in as_completed(futures):
                result, deferred, x, ref = future.result()
                results[result.seed] = result
                for target, bundle in deferred.items():
                    pending[target].append((result, bundle, x, ref))
                if progress and not deferred:
                    progress(result)
        for target, items in pending.items():   # one emulator start per aarch64 target
            outs = run_aarch64_batch(target, [(b, x) for _, b, x, _ in items])
            for (result, _, _, ref), out in zip(items, outs):
                result.outcomes.append(compare(target, ref, out))
                result.outcomes.sort(key=lambda o: list(targets).index(o.target))
        if progress:
            for result in results.values():
                if any(is_aarch64(t) for t in targets) and not result.skipped:
                    progress(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [results[s] for s in seeds]


def shrink_failures(results: list[ModelResult], n_inputs: int, budget: int, jobs: int,
                    progress=None) -> list[dict]:
    """One regression case per failing (model, target): the shrunk spec and what it found."""
    todo = [(r, o) for r in results for o in r.failures]
    cases = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(_worker_shrink, r.spec, o.target, o.status, n_inputs, budget):
                   (r, o) for r, o in todo}
        for future in as_completed(futures):
            r, o = futures[future]
            small = future.result()
            cases.append({"found": {"seed": r.seed, "target": o.target, "status": o.status,
                                    "detail": o.detail, "model": specs.describe(r.spec)},
                          "model": specs.describe(small), "spec": small})
            if progress:
                progress(cases[-1])
    return cases


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
