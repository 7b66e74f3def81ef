"""``python -m compile.fuzz [--n 1000] [--seed 0] [--models M,M] [--small 4] [--target host]
[--timeout 180] [--jobs 2] [--out DIR]``: fuzzing the front end with mutated model files.

Mutant ``seed + i`` (``i`` < ``--n``) is a seeded mutation (``compile.fuzz.mutate``) of corpus
model ``i mod len(corpus)``: the ``--models`` files (default: the committed default model) and
``--small`` small random int8 models made by ``compile.difftest``'s generator.  Each mutant
goes through ``compile/build.py`` for ``--target`` in a worker process; one that compiles is run
against LiteRT's reference kernels on ``--inputs`` inputs.  Every mutant must end as
``exact`` (compiled, bit-exact) or ``refused`` (one ``error:`` line, exit 2) within
``--timeout`` seconds: a traceback, a mismatch, a file LiteRT refuses but we compiled, a
signal or a hang is a failure, kept as ``DIR/failures/<seed>.tflite``.  Writes
``DIR/results.json`` (each run replaces the last run's results and failures); exit code 0
when there was no failure, 1 otherwise, 2 for bad arguments.
"""
from __future__ import annotations

import multiprocessing
import shutil
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Sequence

from compile import cli
from compile.fuzz.worker import OK, STATUSES, mutant_bytes, serve


class Worker:
    """One checking process; ``start`` a task, then ``poll`` its messages."""

    def __init__(self, ctx, work: Path, target: str, n_inputs: int, server=serve):
        self.args = (str(work), target, n_inputs)
        self.ctx, self.server = ctx, server
        self.task = None
        self._spawn()

    def _spawn(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=self.server, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()

    def start(self, index: int, model: Path, seed: int, timeout: float):
        self.task = {"index": index, "model": model, "seed": seed, "phase": "mutate",
                     "deadline": time.monotonic() + timeout, "started": time.monotonic()}
        self.conn.send((str(model), seed))

    def poll(self) -> dict | None:
        """The task's result when it has one (done, died or past its deadline), else None."""
        task = self.task
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message[0] == "mutant":
                    task["kind"], task["what"] = message[1], message[2]
                elif message[0] == "phase":
                    task["phase"] = message[1]
                else:
                    return self._finish(message[1])
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
            self._restart()
            if task["phase"] == "reference":   # LiteRT died on a file we compiled
                return self._finish({"status": "accepted", "detail": f"LiteRT died ({how})"})
            return self._finish({"status": "crash",
                                 "detail": f"the worker died ({how}) in phase {task['phase']}"})
        if time.monotonic() > task["deadline"]:
            self.proc.kill()
            self._restart()
            return self._finish({"status": "hang", "detail": f"no result in phase "
                                                             f"{task['phase']} before the limit"})
        return None

    def _finish(self, result: dict) -> dict:
        task, self.task = self.task, None
        return {"index": task["index"], "seed": task["seed"], "model": str(task["model"]),
                "kind": task.get("kind"), "what": task.get("what"),
                "seconds": round(time.monotonic() - task["started"], 2), **result}

    def _restart(self):
        self.proc.join(5)
        self.conn.close()
        self._spawn()

    def close(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def run_mutants(corpus: list[Path], seeds: Sequence[int], target: str, jobs: int,
                timeout: float, n_inputs: int, work: Path, progress=None,
                server=serve) -> list[dict]:
    """Every seed's mutant checked; ``progress(result)`` after each.  ``server``: the
    workers' main loop (``compile.fuzz.worker.serve``)."""
    ctx = multiprocessing.get_context("spawn")
    workers = [Worker(ctx, work / f"worker{i}", target, n_inputs, server) for i in range(jobs)]
    todo = list(enumerate(seeds))
    results: list[dict] = []
    try:
        while todo or any(w.task for w in workers):
            for w in workers:
                if w.task is None and todo:
                    i, seed = todo.pop(0)
                    w.start(i, corpus[i % len(corpus)], seed, timeout)
            busy = [w for w in workers if w.task]
            wait([w.conn for w in busy], timeout=1.0)
            for w in busy:
                if (result := w.poll()) is not None:
                    results.append(result)
                    if progress:
                        progress(result)
    finally:
        for w in workers:
            w.close()
    return sorted(results, key=lambda r: r["index"])


def small_models(n: int, out: Path) -> list[Path]:
    """``n`` small random int8 models from the difftest generator (seeds 0..n-1), cached."""
    from compile.difftest.convert import to_tflite
    from compile.difftest.spec import random_spec
    from compile.errors import ModelError
    from compile.frontend import read_model

    paths, seed = [], 0
    out.mkdir(parents=True, exist_ok=True)
    while len(paths) < n:
        path = out / f"small-{seed}.tflite"
        if not path.is_file():
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                to_tflite(random_spec(seed, 4), Path(tmp) / "m.tflite").replace(path)
        seed += 1
        try:
            read_model(path)   # the corpus holds models we compile
        except ModelError:
            continue
        paths.append(path)
    return paths


def summary(results: list[dict]) -> dict:
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    kinds: dict = {}
    for r in results:
        kinds.setdefault(r["kind"], {}).setdefault(r["status"], 0)
        kinds[r["kind"]][r["status"]] += 1
    return {"mutants": len(results), "counts": counts, "by_kind": kinds,
            "failures": sum(r["status"] not in OK for r in results)}


def run(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    parser = cli.ArgumentParser(__doc__, prog="python -m compile.fuzz")
    parser.add_argument("--n", type=int, default=1000, help="mutants (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--models", default=str(cli.DEFAULT_MODEL.relative_to(cli.REPO)),
                        help="comma-separated .tflite files to mutate (default: the default "
                             "model); '' for none")
    parser.add_argument("--small", type=int, default=4,
                        help="small generated models added to the corpus (default 4)")
    parser.add_argument("--target", default="host", help="target to compile for (default host)")
    parser.add_argument("--inputs", type=int, default=2, help="inputs per compiled mutant")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds a mutant may take (default 180)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=cli.REPO / "build" / "fuzz",
                        help="where results.json and failures/ go (default build/fuzz)")
    args = parser.parse_args(argv)
    for name in ("n", "inputs", "jobs"):
        if getattr(args, name) < 1:
            raise cli.UserError(f"--{name} must be at least 1")
    if args.small < 0 or args.timeout <= 0:
        raise cli.UserError("--small must be at least 0 and --timeout positive")
    from compile.frontend import read_model
    from compile.targets import get_target

    target = get_target(args.target).name
    corpus = [Path(m) for m in args.models.split(",") if m]
    for path in corpus:
        if not path.is_file():
            raise cli.UserError(f"model file {path} not found")
        read_model(path)   # a corpus model must compile before its mutants mean anything
    args.out.mkdir(parents=True, exist_ok=True)
    corpus += small_models(args.small, args.out / "corpus")
    if not corpus:
        raise cli.UserError("the corpus is empty: give --models or --small")

    start = time.monotonic()
    bar = tqdm(total=args.n, desc="fuzz", unit="mutant", dynamic_ncols=True)
    failures = args.out / "failures"   # this run's, like results.json: the last run's go
    shutil.rmtree(failures, ignore_errors=True)
    failed = 0

    def progress(result):
        nonlocal failed
        bar.update(1)
        if result["status"] not in OK:
            failed += 1
            failures.mkdir(exist_ok=True)
            data, _, _ = mutant_bytes(Path(result["model"]), result["seed"])
            (failures / f"{result['seed']}.tflite").write_bytes(data)
            bar.write(f"seed {result['seed']} ({Path(result['model']).name}, {result['kind']}: "
                      f"{result['what']}): {result['status']} {result['detail']}")
        bar.set_postfix(failures=failed)

    with tempfile.TemporaryDirectory(prefix="fuzz-", dir=args.out) as work:
        results = run_mutants(corpus, range(args.seed, args.seed + args.n), target, args.jobs,
                              args.timeout, args.inputs, Path(work), progress)
    bar.close()
    report = summary(results)
    report["seconds"] = round(time.monotonic() - start, 1)
    report["command"] = cli.command_line()
    report["corpus"] = [str(p.resolve().relative_to(cli.REPO)) if p.resolve().is_relative_to(
        cli.REPO) else str(p) for p in corpus]
    cli.save_json(args.out / "results.json", {**report, "mutants_checked": [
        {**r, "model": Path(r["model"]).name} for r in results]})
    c = report["counts"]
    print(f"{report['mutants']} mutants of {len(corpus)} models: {c['exact']} compiled "
          f"bit-exact, {c['refused']} refused with one error line; {c['traceback']} tracebacks, "
          f"{c['noisy']} with more than one stderr line, "
          f"{c['crash']} crashes, {c['hang']} hangs, {c['mismatch']} mismatches, "
          f"{c['accepted']} accepted that LiteRT refuses, in {report['seconds']:.0f} s "
          f"({args.out / 'results.json'})")
    return 0 if not report["failures"] else 1


if __name__ == "__main__":
    sys.exit(cli.main(run))
