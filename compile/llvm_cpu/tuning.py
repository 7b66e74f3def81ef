"""Auto-scheduling of the integer kernels with MetaSchedule (``tvm.s_tir.meta_schedule``).

One JSON database per (model sha256, full TVM target JSON), by default under
``~/.cache/sandglass/tuning/<model sha256 16>-<target hash 16>/`` (``--tuning-db DIR`` overrides):

* a build finds it and compiles with it (``MetaScheduleApplyDatabase``), no re-tuning, and says so;
* ``--tune-trials N`` tunes until the database holds N measured trials: every measurement is
  appended to the database as it happens, so an interrupted run resumes where it stopped;
* nothing in a database is thrown away: a run killed while appending leaves a cut last line, which
  is dropped with a warning naming how many records were kept; a database damaged otherwise is set
  aside (renamed ``DIR.damaged-<time>-<pid>``, the user told where) and a new one starts;
* one tuning run per database at a time (a lock file beside it): a second is refused with one
  line; a build reads a database another process is tuning into as it is, never repairs it.

Measurements run on this machine (host targets) or, through TVM's RPC tracker, on the device:
``python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190`` somewhere, and on the Pi
``python -m tvm.exec.rpc_server --tracker HOST:9190 --key rpi4``; then ``--rpc-tracker HOST:9190
--rpc-key rpi4``.  Cross targets (aarch64) are compiled here into aarch64 shared libraries
(``tvm.support.cc.cross_compiler``) so the device needs no compiler.  Without a Pi,
``python -m compile.backends.aarch64.sysroot --rpc-server HOST:9190 --key rpi4`` serves the same protocol from
qemu-aarch64 (it exercises the whole path; its timings are qemu's, useless for ranking speed).

MetaSchedule: https://arxiv.org/abs/2205.13603 ; TVM RPC: https://tvm.apache.org/docs/
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.utils import fork_seed

from compile.errors import TuningError
from compile.paths import cache_root
from compile.llvm_cpu.intrin import intrinsic_families, load_tensor_intrinsics
from compile.llvm_cpu.pipeline import fused_tir
from compile.llvm_cpu.schedules import CPUKernelRule
from compile.targets import resolve_native

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
INFO = "sandglass-tuning.json"     # what the database is for (model, target), trials asked
CONNECT_TIMEOUT_S = 5.0            # tracker reachability and summary queries
SESSION_TIMEOUT_S = 60             # one RPC measurement (upload + run) at most

Log = Callable[[str], None]



@dataclass(frozen=True)
class RPCSpec:
    host: str
    port: int
    key: str

    @staticmethod
    def parse(tracker: str, key: str | None) -> "RPCSpec":
        """``HOST:PORT`` + key -> RPCSpec; TuningError on a malformed value."""
        host, sep, port = tracker.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TuningError(f"--rpc-tracker must be HOST:PORT, got '{tracker}'")
        if not key:
            raise TuningError("--rpc-tracker needs --rpc-key (the key the device's server "
                              "registered with, e.g. rpi4)")
        return RPCSpec(host, int(port), key)


def target_json(target: dict) -> str:
    """Canonical JSON of a TVM target dict (the database key uses all of it)."""
    return json.dumps(target, sort_keys=True, separators=(",", ":"))


def tuning_target(target: dict) -> tvm.target.Target:
    """The TVM target for tuning and for compiling with the database (same in both places).

    MetaSchedule needs ``num-cores`` (threads of the measured kernels); the board files set it,
    the host gets this machine's count."""
    target = resolve_native(target)
    target.setdefault("num-cores", max(1, len(os.sched_getaffinity(0))))
    return tvm.target.Target(target)


def default_db_dir(model_sha256: str, target: dict) -> Path:
    digest = hashlib.sha256(target_json(target).encode()).hexdigest()
    return cache_root() / "tuning" / f"{model_sha256[:16]}-{digest[:16]}"


def count_trials(db_dir: Path) -> int:
    """Measured trials in the database (one JSON line per record)."""
    try:
        with open(Path(db_dir) / RECORDS) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def seeded_trials(db_dir: Path) -> int:
    """Records of the database that measure ``compile.llvm_cpu.schedules``' default schedules (one per
    kernel, written before the search starts); the rest are MetaSchedule's own trials."""
    try:
        return int(json.loads((Path(db_dir) / INFO).read_text()).get("seeded", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def searched_trials(db_dir: Path) -> int:
    """MetaSchedule's measured trials in the database (the default-schedule seeds not counted)."""
    return max(0, count_trials(db_dir) - seeded_trials(db_dir))


def _set_aside(db_dir: Path, why: str, log: Log) -> None:
    """Move a damaged database out of the way (renamed, never deleted) and say where."""
    aside = db_dir.with_name(f"{db_dir.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(db_dir, aside)
    log(f"warning: tuning database {db_dir} is damaged ({why}); set aside as {aside}, "
        "starting a new one")


def repair_database(db_dir: Path, log: Log, strict: bool = False) -> None:
    """Make ``db_dir`` readable without losing a complete record. Both files are append-only logs of
    one JSON value per line: a run killed while appending leaves its last line cut, and that line
    is dropped (said so, with the records kept). A bad line anywhere else means the files were
    damaged otherwise: the database is set aside (renamed) and a new one starts, or with
    ``strict`` a TuningError says so and nothing is touched."""
    db_dir = Path(db_dir)

    def damaged(why: str) -> None:
        if strict:
            raise TuningError(f"tuning database {db_dir} is damaged ({why}): move it away, or "
                              "give another --tuning-db")
        _set_aside(db_dir, why, log)

    for name in (WORKLOADS, RECORDS):
        path = db_dir / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as err:
            return damaged(f"{name}: {type(err).__name__}")
        kept = [ln for ln in text.splitlines() if ln.strip()]
        bad = []
        for i, line in enumerate(kept):
            try:
                json.loads(line)
            except ValueError:
                bad.append(i)
        if not bad:
            if text and not text.endswith("\n"):
                # killed between a record and its newline: the record is whole, but the next
                # run would append its own to the same line
                with path.open("a") as f:
                    f.write("\n")
            continue
        if bad != [len(kept) - 1]:
            return damaged(f"line {bad[0] + 1} of {name} is not JSON")
        tmp = path.with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_text("".join(ln + "\n" for ln in kept[:-1]))
        os.replace(tmp, path)
        log(f"warning: tuning database {db_dir}: dropped the cut last line of {name} (a run "
            f"stopped while writing it); kept {len(kept) - 1} "
            f"{'records' if name == RECORDS else 'workloads'}")


def open_database(db_dir: Path, log: Log, strict: bool = False) -> ms.database.JSONDatabase | None:
    """The database in ``db_dir`` if it holds records (a cut last line dropped first); None if
    absent or damaged (then set aside, with a warning). While another process tunes into it, it
    is read as it is, never repaired under that process's feet."""
    db_dir = Path(db_dir)
    if count_trials(db_dir) == 0:
        return None
    with _lock(db_dir, wait=False) as owned:
        if owned:
            repair_database(db_dir, log, strict)  # TVM's loader aborts on bad JSON (C++ error)
        elif not _all_json(db_dir):
            log(f"warning: tuning database {db_dir} is being written by a tuning run; "
                "building without it")
            return None
        if count_trials(db_dir) == 0:
            return None
        try:
            return ms.database.JSONDatabase(str(db_dir / WORKLOADS), str(db_dir / RECORDS),
                                            allow_missing=False)
        except (OSError, ValueError, RuntimeError) as err:   # RuntimeError: TVM FFI errors
            if owned and strict:
                raise TuningError(f"tuning database {db_dir} is damaged (TVM cannot load it: "
                                  f"{type(err).__name__}): move it away, or give another "
                                  "--tuning-db") from None
            if owned:
                _set_aside(db_dir, f"TVM cannot load it: {type(err).__name__}", log)
            return None


def _all_json(db_dir: Path) -> bool:
    try:
        for name in (WORKLOADS, RECORDS):
            for line in (db_dir / name).read_text().splitlines():
                if line.strip():
                    json.loads(line)
    except (OSError, ValueError):
        return False
    return True


_HELD: set[Path] = set()


@contextlib.contextmanager
def _lock(db_dir: Path, wait: bool):
    """Yields whether this process holds the database's lock (a file beside it, so that setting
    the database aside keeps it); a tuning run holds it from start to end."""
    lock_path = Path(db_dir).absolute().with_name(f".{Path(db_dir).name}.lock")
    if lock_path in _HELD:          # flock does not nest across two opens in one process
        yield True
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        _HELD.add(lock_path)
        try:
            yield True
        finally:
            _HELD.discard(lock_path)


@contextlib.contextmanager
def locked(db_dir: Path):
    """One tuning run per database at a time: a second one is refused, not interleaved."""
    with _lock(db_dir, wait=False) as owned:
        if not owned:
            raise TuningError(f"another run is tuning into {db_dir}: wait for it to finish, or give "
                              "this one its own --tuning-db")
        yield


def check_tracker(rpc: RPCSpec) -> dict:
    """Bounded checks that the tracker answers and a server registered with ``rpc.key``."""
    where = f"{rpc.host}:{rpc.port}"
    try:
        socket.create_connection((rpc.host, rpc.port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise TuningError(f"cannot reach the RPC tracker at {where}: "
                          f"{err.strerror or err} (start it with python -m "
                          f"tvm.exec.rpc_tracker --port {rpc.port})") from None
    result: dict = {}

    def query() -> None:
        try:
            result["summary"] = tvm.rpc.connect_tracker(rpc.host, rpc.port).summary()
        except Exception as err:   # noqa: BLE001 - reported below as one line
            result["error"] = err

    worker = threading.Thread(target=query, daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT_S)
    if "summary" not in result:
        why = result.get("error", f"no answer in {CONNECT_TIMEOUT_S:.0f} s")
        raise TuningError(f"{where} does not answer as a TVM RPC tracker: {why}")
    summary = result["summary"]
    keys = sorted({s["key"].split(":", 1)[-1] for s in summary.get("server_info", [])})
    if rpc.key not in keys:
        raise TuningError(
            f"no RPC server with key '{rpc.key}' at tracker {where} (registered: "
            f"{', '.join(keys) or 'none'}); on the device run python -m tvm.exec.rpc_server "
            f"--tracker {where} --key {rpc.key}")
    return summary


def export_aarch64(mod: tvm.runtime.Module) -> str:
    """MetaSchedule builder export: an aarch64 ``.so`` (runs in the builder's worker processes)."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="sandglass-ms-"), "candidate.so")
    mod.export_library(path, fcompile=cc.cross_compiler("aarch64-linux-gnu-gcc"))
    return path


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """A progress bar over the trials (n of N, elapsed, remaining, best so far), and the log
    line ``task i/N name: trials, best`` after every measured batch."""

    def __init__(self, log: Log, base: int, goal: int) -> None:
        from tqdm import tqdm

        self.log, self.base, self.goal = log, base, goal
        self.done = 0
        self.best: dict[int, float] = {}
        self.bar = tqdm(total=goal, initial=base, desc="tune", unit="trial",
                        dynamic_ncols=True)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
              runner_results) -> None:
        tasks = task_scheduler.tasks_
        task = tasks[task_id]
        self.done += len(runner_results)
        for result in runner_results:
            if result.error_msg is None and result.run_secs:
                secs = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                self.best[task_id] = min(self.best.get(task_id, float("inf")), secs)
        best = self.best.get(task_id)
        failed = sum(r.error_msg is not None for r in runner_results)
        self.bar.update(len(runner_results))
        self.bar.set_postfix_str(f"{task.ctx.task_name[:40]} best "
                                 f"{'-' if best is None else f'{best * 1e6:.1f} us'}")
        self.log(f"tune: task {task_id + 1}/{len(tasks)} {task.ctx.task_name}: "
                 f"{len(runner_results)} trials"
                 f"{f' ({failed} failed)' if failed else ''}, best "
                 f"{'-' if best is None else f'{best * 1e6:.1f} us'}; "
                 f"total {self.base + self.done}/{self.goal}")


def search_strategy(trials: int) -> ms.search_strategy.EvolutionarySearch:
    """MetaSchedule's evolutionary search, its population scaled down for small budgets.

    The defaults (512 candidates, 4 genetic rounds) cost ~2 min of search per task batch on
    this 2-core machine, which only pays off for long runs; a few-trial run uses 64 and 1.
    """
    if trials >= 256:
        return ms.search_strategy.EvolutionarySearch()
    return ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16,
                                                 genetic_num_iters=1)


def tune(mod: tvm.IRModule, target: dict, trials: int, db_dir: Path, *,
         rpc: RPCSpec | None = None, cross_aarch64: bool = False, log: Log = print,
         per_iter: int = 16, seed: int = 0) -> ms.database.JSONDatabase:
    """Tune ``mod`` for ``target`` until ``db_dir`` holds ``trials`` measured search trials.

    A new database first gets one measured record per kernel: its default schedule
    (``compile.llvm_cpu.schedules``), so that the search starts from it and a kernel only takes a
    tuned schedule that measured faster. Reuses (no measurement) when the database already
    has the trials asked; resumes when it has fewer.
    """
    db_dir = Path(db_dir)
    with locked(db_dir):
        return _tune(mod, target, trials, db_dir, rpc=rpc, cross_aarch64=cross_aarch64, log=log,
                     per_iter=per_iter, seed=seed)


def _tune(mod, target, trials, db_dir, *, rpc, cross_aarch64, log, per_iter, seed):
    open_database(db_dir, log)     # a cut last line dropped, a damaged database set aside
    done = searched_trials(db_dir)
    if done >= trials:
        log(f"tune: reusing tuning database {db_dir} ({done} trials >= {trials} asked): "
            "no re-tuning")
        return open_database(db_dir, log)
    if cross_aarch64 and rpc is None:
        raise TuningError("tuning an aarch64 target measures on the device: give "
                          "--rpc-tracker HOST:PORT --rpc-key KEY (see compile/llvm_cpu/tuning.py)")
    if rpc is not None:
        check_tracker(rpc)
    db_dir.mkdir(parents=True, exist_ok=True)
    seeded = seeded_trials(db_dir)
    info = {"target": target, "trials_asked": trials, "seeded": seeded}
    (db_dir / INFO).write_text(json.dumps(info, indent=1))
    tvm_target = tuning_target(target)
    families = intrinsic_families(tvm_target)
    load_tensor_intrinsics(families)
    tasks = [t for t in ms.relax_integration.extract_tasks(fused_tir(mod, tvm_target), tvm_target)
             if not (t.mod.attrs and t.mod.attrs.get("tirx.is_scheduled", False))]
    log(f"tune: {len(tasks)} tasks, {trials - done} trials to go"
        f"{f' (resuming at {done})' if done else ''}, database {db_dir}, measuring "
        f"{'on ' + rpc.key + ' via ' + rpc.host + ':' + str(rpc.port) if rpc else 'locally'}")
    # One TuneContext per task, like ms.relax_integration.extracted_tasks_to_tune_contexts but
    # with a plain logger: its per-task log files come from logging.config.dictConfig, which
    # breaks on the second tuning run in one process when other handlers are attached.
    logger = logging.getLogger("sandglass.tuning")
    contexts = [ms.TuneContext(mod=task.dispatched[0], target=task.target,
                               space_generator="post-order-apply",
                               search_strategy=search_strategy(trials - done),
                               task_name=task.task_name, logger=logger, rand_state=rand,
                               num_threads=1).clone()
                for task, rand in zip(tasks, fork_seed(seed, n=len(tasks)))]
    weights = [float(task.weight) for task in tasks]
    builder = ms.builder.LocalBuilder(
        max_workers=1, timeout_sec=60, f_export=export_aarch64 if cross_aarch64 else None,
        initializer=functools.partial(load_tensor_intrinsics, families))
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50,
                                          enable_cpu_cache_flush=False)
    if rpc is not None:
        runner = ms.runner.RPCRunner(
            ms.runner.RPCConfig(tracker_host=rpc.host, tracker_port=rpc.port,
                                tracker_key=rpc.key, session_timeout_sec=SESSION_TIMEOUT_S),
            evaluator, max_workers=1)
    else:
        runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator)
    database = ms.database.JSONDatabase(str(db_dir / WORKLOADS), str(db_dir / RECORDS),
                                        allow_missing=True)
    if count_trials(db_dir) == 0:
        info["seeded"] = _seed_default_schedules(tasks, tvm_target, builder, runner, database,
                                                 log)
        (db_dir / INFO).write_text(json.dumps(info, indent=1))
    progress = _Progress(log, done, trials)
    callbacks = [*ms.measure_callback.MeasureCallback.create("default"), progress]
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=str(db_dir / "logs"),
            max_trials_global=trials - done, num_trials_per_iter=min(per_iter, trials - done),
            builder=builder, runner=runner, database=database,
            measure_callbacks=callbacks, cost_model="xgb", task_scheduler="gradient")
    progress.bar.close()
    log(f"tune: done, {searched_trials(db_dir)} trials in {db_dir}")
    return database


def _seed_default_schedules(tasks, target: tvm.target.Target, builder, runner,
                            database: ms.database.Database, log: Log) -> int:
    """Measure every task's default schedule and commit it as a tuning record."""
    candidates = []
    for task in tasks:
        workload = task.dispatched[0]
        sch = CPUKernelRule().apply(workload["main"], target, False)
        if sch is not None:
            candidates.append((workload, sch))
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in candidates])
    measured = []
    for (workload, sch), result in zip(candidates, built):
        if result.error_msg is None:
            args = ms.arg_info.ArgInfo.from_prim_func(workload["main"])
            measured.append((workload, sch, args,
                             ms.runner.RunnerInput(result.artifact_path, "cpu", args)))
    futures = runner.run([m[3] for m in measured])
    seeded = 0
    for (workload, sch, args, _), future in zip(measured, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, database.commit_workload(workload), result.run_secs, target, args))
            seeded += 1
    log(f"tune: measured the default schedules of {seeded}/{len(tasks)} kernels as the "
        "starting records")
    return seeded


def trials_of(opts: dict) -> int:
    """The ``tune_trials`` build option, checked."""
    try:
        trials = int(opts.get("tune_trials") or 0)
    except (TypeError, ValueError):
        raise TuningError(f"tune_trials must be a whole number, got {opts['tune_trials']!r}") from None
    if trials < 0:
        raise TuningError(f"tune_trials must be >= 0, got {trials}")
    return trials


def options(opts: dict, model_sha256: str, target: dict) -> tuple[Path, int, RPCSpec | None]:
    """(database dir, trials, RPCSpec or None) from build options ``tune_trials``,
    ``tuning_db``, ``rpc_tracker``, ``rpc_key`` (``build.py --opt KEY=VALUE``)."""
    db = opts.get("tuning_db")
    db_dir = Path(db) if db else default_db_dir(model_sha256, resolve_native(target))
    trials = trials_of(opts)
    rpc = None
    if opts.get("rpc_tracker"):
        rpc = RPCSpec.parse(str(opts["rpc_tracker"]), opts.get("rpc_key"))
    elif opts.get("rpc_key"):
        raise TuningError("rpc_key needs rpc_tracker HOST:PORT too")
    return db_dir, trials, rpc
