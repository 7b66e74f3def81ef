"""Auto-scheduling of the Cortex-M kernel calls with MetaSchedule, each candidate measured in a
benchmark firmware on the board (``build.py --target BOARD --tune-trials N``).

**Tasks.** Every call of ``firmware/sg_nn.h`` (``nnlib``) whose kernel has more than one
schedule choice (``nnlib.knob_choices``): ``widen`` of sg_conv_s8 on M4/M7 (SMLAD over rows
widened to int16, or the int8 dot products), the int16 band of sg_dwconv_s8 (channels x rows
per band, from 256 B to 16 KB, or no band: the plain loop).  The workload is the call's
PrimFunc as the untuned build emits it, so one layer is one workload in every model.

**Search space.** A candidate is that PrimFunc scheduled by a MetaSchedule trace:
``SampleCategorical`` over the choices, ``Annotate`` of block ``acc`` with ``sg.knob``.  The
builder reads the choice from that annotation.  The spaces are small (2 choices for a 1x1
convolution, at most 9 for a depthwise one), so the search measures every choice of a task,
the default first, tasks with the most MACs first, until the database holds N trials; a
sampled search would spend the same trials and might miss the best.

**Builder** (``FirmwareBuilder``): one benchmark firmware per candidate, written by the same
project writer as a model's (``project.write_project``): the call alone as a one-step model with
the layer's own constants and a seeded random input, compiled with the board's flags.  The
reference output is the call's TIR built for this machine with TVM's LLVM backend.

**Runners.** ``QemuRunner`` runs the firmware on the board's QEMU machine (a real board's
``emulate_on``), two at a time, with the trace plugin: the cost is the call's estimated cycles
(``compile.cyclemodel``) at the board's clock.  ``LinkRunner`` (``--opt tune_port=PORT``)
flashes the benchmark's link firmware (``make flash-link``) and times the call with the board's
cycle counter over the board link (``link.py``), the candidates spread over several boards
(``tune_port=/dev/ttyACM0@ID0,/dev/ttyACM1@ID1``: each board's console and probe);
``tune_port=qemu[,qemu]`` runs that firmware on QEMU boards instead (instructions).  A
candidate whose output differs from the reference in any byte is recorded as failed, never
as fast.

**Database.** MetaSchedule's JSON database per (model sha256, board, kernel library sources,
cycle model's method: measurements of other kernels, or costed another way, say nothing about
these), managed as the LLVM CPU targets' (``compile.llvm_cpu.tuning``: resumed, reused,
repaired, one tuning run at a time).
A build takes, per call, the fastest choice measured, only when the default was measured too
and was slower, and only where the call's scratch fits the untuned build's memory plan: every
other tensor keeps its place (``memplan.refit``), so the arena does not grow and no other
kernel reads or writes elsewhere than untuned.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import queue
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from compile.backends.cortexm import link, nnlib, project
from compile.backends.cortexm.graph import Graph, Step, Tensor, count_macs
from compile.cyclemodel import mca, timing_of
from compile.cyclemodel.qemu import plugin, plugin_argument, read_trace
from compile.errors import BackendError, TuningError
from compile.llvm_cpu.tuning import (INFO, RECORDS, WORKLOADS, Log, count_trials, default_db_dir,
                                     locked, open_database, trials_of)
from compile.paths import shown
from compile.targets import Target

PROJECT = "firmware"       # the benchmark project inside a candidate's directory
KNOB = "sg.knob"         # block annotation of a candidate: index into nnlib.knob_choices
BLOCK = "acc"            # the block of nnlib.reference that carries it
PER_ITER = 8             # candidates built and measured per batch
WORKERS = 2              # parallel builds and QEMU runs (this machine has 2 cores)


def ms_target(target: Target) -> tvm.target.Target:
    """The board's core as a TVM target (kind ``c``, its ``-mcpu``): the records' target, and
    whether the core has DSP and Helium."""
    mcpu = [f.split("=", 1)[1] for f in target["cpu"]["flags"] if f.startswith("-mcpu=")]
    if not mcpu:
        raise TuningError(f"targets/{target.name}.toml: [cpu] flags name no -mcpu")
    return tvm.target.Target({"kind": "c", "mcpu": mcpu[0].split("+")[0]})


def widens(target: tvm.target.Target) -> bool:
    """sg_conv_s8 has its widened path on this core: DSP without Helium (sg_nn.h)."""
    return bool(target.attrs.get("feature.has_dsp")) and not bool(
        target.attrs.get("feature.has_mve"))


# -- tasks and candidates ---------------------------------------------------------------------
@dataclass
class Task:
    name: str                    # the C kernel of the untuned build
    prim: tirx.PrimFunc          # the call as the untuned build emits it: the workload
    consts: list[np.ndarray]     # weights, bias, multiplier, right shift
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    macs: int
    choices: list[dict] = field(default_factory=list)

    @property
    def workload(self) -> tvm.IRModule:
        return tvm.IRModule({"main": self.prim})


def extract_tasks(graph: Graph, target: tvm.target.Target) -> list[Task]:
    """The library calls of ``graph`` with more than one choice, most MACs first."""
    tasks: dict[str, Task] = {}
    for step in graph.steps:
        prim = graph.library.get(step.kernel)
        if prim is None or step.kernel in tasks:
            continue
        x, *consts, y = (graph.tensors[a] for a in step.args)
        choices = nnlib.knob_choices(prim, widens(target))
        tasks[step.kernel] = Task(step.kernel, prim, [t.data for t in consts], x.shape, y.shape,
                                  count_macs(prim), choices)
    return sorted((t for t in tasks.values() if len(t.choices) > 1), key=lambda t: -t.macs)


def candidate(task: Task, index: int) -> s_tir.Schedule:
    """The task's PrimFunc scheduled with choice ``index``: the trace MetaSchedule records."""
    n = len(task.choices)
    sch = s_tir.Schedule(task.workload)
    v = sch.sample_categorical(candidates=list(range(n)), probs=[1.0 / n] * n, decision=index)
    sch.annotate(sch.get_sblock(BLOCK), KNOB, v)
    return sch


def choice_of(mod: tvm.IRModule) -> int:
    """The choice a scheduled candidate carries (its ``sg.knob`` annotation)."""
    sch = s_tir.Schedule(mod)
    return int(sch.get(sch.get_sblock(BLOCK)).annotations[KNOB])


def choice_of_record(record: ms.database.TuningRecord) -> int:
    sch = s_tir.Schedule(record.workload.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return choice_of(sch.mod)


def apply_choice(prim: tirx.PrimFunc, index: int, target: tvm.target.Target) -> tirx.PrimFunc:
    return nnlib.with_knobs(prim, nnlib.knob_choices(prim, widens(target))[index])


# -- the benchmark firmware -------------------------------------------------------------------
def bench_graph(name: str, prim: tirx.PrimFunc, consts: list[np.ndarray],
                x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> Graph:
    """One call of ``prim`` as a one-step model: its input, its constants, its output."""
    tensors = {"input": Tensor("input", tuple(x_shape), "int8", "input")}
    args = ["input"]
    for i, data in enumerate(consts):
        tensors[f"c{i}"] = Tensor(f"c{i}", tuple(data.shape), str(data.dtype), "const", data)
        args.append(f"c{i}")
    tensors["t0"] = Tensor("t0", tuple(y_shape), "int8", "output")
    kernel = nnlib.emit(name, prim)
    step = Step(name, args + ["t0"])
    if kernel.workspace_bytes:
        tensors["ws0"] = Tensor("ws0", (kernel.workspace_bytes,), "uint8", "workspace")
        step.workspace = "ws0"
    return Graph(tensors, [step], {name: kernel}, "input", "t0", library={name: prim})


def bench_input(prim: tirx.PrimFunc, x_shape: tuple[int, ...]) -> np.ndarray:
    """The benchmark's input: int8, seeded by the workload (the same in every run)."""
    seed = int(hashlib.sha256(str(tvm_ffi.structural_hash(prim)).encode()).hexdigest()[:8], 16)
    x = np.random.default_rng(seed).integers(-128, 128, x_shape).astype(np.int8)
    x.reshape(-1)[::7] = -128
    return x


def reference_output(prim: tirx.PrimFunc, x: np.ndarray, consts: list[np.ndarray],
                     y_shape: tuple[int, ...]) -> np.ndarray:
    """The call's TIR (``nnlib.reference``) built for this machine and run on ``x``."""
    func = tvm.compile(tvm.IRModule({"main": prim}), target="llvm")
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (x, *consts)]
    out = tvm.runtime.empty(tuple(y_shape), "int8")
    func(*args, out)
    return out.numpy()


PARAMS = ("x", "w", "bias", "mult", "rshift", "expected")


@derived_object
class FirmwareBuilder(ms.builder.PyBuilder):
    """MetaSchedule builder: a candidate -> its benchmark firmware project (the artifact is
    the project's directory, holding ``x.npy`` and ``expected.npy``).  ``params``: the call's input,
    constants and reference output (``PARAMS``)."""

    def __init__(self, target: Target, board: Target, goal: str = "") -> None:
        super().__init__()
        self.target, self.board, self.goal = target, board, goal
        self.root = Path(tempfile.mkdtemp(prefix="sg-tune-"))
        self.count = 0

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        jobs = []
        for item in build_inputs:
            self.count += 1
            jobs.append((item, self.root / f"c{self.count}"))
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(lambda job: self._build_one(*job), jobs))

    def _build_one(self, item: ms.builder.BuilderInput, out: Path) -> ms.builder.BuilderResult:
        try:
            params = {k: v.numpy() for k, v in item.params.items()}
            prim = item.mod["main"]
            index = choice_of(item.mod)
            prim = apply_choice(prim, index, item.target)
            x = params["x"]
            graph = bench_graph(f"sg_bench_{str(prim.attrs['sg.nn'])}", prim,
                                [params[k] for k in PARAMS[1:5]], x.shape,
                                params["expected"].shape)
            proj = out / PROJECT
            proj.mkdir(parents=True)
            project.write_project(graph, self.target, proj, x)
            if self.board is not self.target:
                project.retarget(proj, self.target, self.board)
            np.save(out / "expected.npy", params["expected"])
            np.save(out / "x.npy", x)
            project.make_firmware(proj, self.board, goal=self.goal)
            return ms.builder.BuilderResult(str(out), None)
        except BackendError as err:          # does not fit the board: rejected, said why
            return ms.builder.BuilderResult(None, str(err))


def _compare(y: np.ndarray, expected: np.ndarray) -> str | None:
    wrong = int(np.count_nonzero(y.reshape(-1) != expected.reshape(-1)))
    if wrong:
        return f"wrong result: {wrong} of {expected.size} outputs differ from the reference"
    return None


class _Done(ms.runner.PyRunnerFuture):
    def __init__(self, result: ms.runner.RunnerResult) -> None:
        super().__init__()
        self.result_ = result

    def done(self) -> bool:
        return True

    def result(self) -> ms.runner.RunnerResult:
        return self.result_


_Done = derived_object(_Done)


@derived_object
class QemuRunner(ms.runner.PyRunner):
    """MetaSchedule runner on the board's QEMU machine: the candidate's estimated cycles
    (trace plugin + cycle model) at the board's clock, as seconds; or, for a board without a
    ``[timing]`` table, its instructions at that clock."""

    def __init__(self, target: Target, emulator: Target) -> None:
        super().__init__()
        self.target, self.emulator = target, emulator
        self.timing = timing_of(target) if target.get("timing", {}).get("cpu") else None
        self.timeout = float(emulator["run"].get("timeout_s", 300))
        # what every run needs, here once: a missing QEMU or plugin is this machine's
        # problem, not a candidate's (a BackendError in a run is recorded as its failure)
        project.check_qemu(emulator)
        if self.timing is not None:
            plugin()

    def run(self, runner_inputs: list[ms.runner.RunnerInput]) -> list[ms.runner.RunnerFuture]:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(self._run_one, runner_inputs))
        return [_Done(r) for r in results]

    def _run_one(self, item: ms.runner.RunnerInput) -> ms.runner.RunnerResult:
        out = Path(item.artifact_path)
        elf = out / PROJECT / "build" / "firmware.elf"
        try:
            qemu_args, trace_file = [], out / "trace.txt"
            if self.timing is not None:
                window, regions = project.trace_layout(elf, self.emulator)
                qemu_args = plugin_argument(trace_file, window=window, regions=regions)
            records, _ = project.run_firmware(elf, self.emulator, self.timeout, qemu_args)
            y = np.array(records[0]["y"], dtype=np.int64).astype(np.int8)
            wrong = _compare(y, np.load(out / "expected.npy"))
            if wrong:
                return ms.runner.RunnerResult(None, wrong)
            if self.timing is None:
                return ms.runner.RunnerResult([records[0]["instr"] / self.target["clock_hz"]],
                                              None)
            est = project.board_estimate(read_trace(trace_file), self.timing, self.target, 1)
            return ms.runner.RunnerResult([est["cycles_estimate"] / self.timing.clock_hz], None)
        except BackendError as err:
            return ms.runner.RunnerResult(None, str(err))


@derived_object
class LinkRunner(ms.runner.PyRunner):
    """MetaSchedule runner on boards over their links, one candidate per board at a time
    (``ports``: one entry per board).  An entry ``DEV[@PROBE]``: ``make flash-link
    [PROBE=ID]`` flashes the benchmark's link firmware (pyOCD's probe with that unique ID
    when several are plugged in), the input goes over the link, the board's cycle counter
    times the call (``board_cycles``: DWT CYCCNT).  ``qemu``: the link firmware on the QEMU
    board with its UART on a socket, timed in instructions.  A board that cannot be flashed
    or reached stops the run (TuningError): its candidates are not wrong, it is."""

    def __init__(self, target: Target, board: Target, ports: list[str],
                 timeout: float = 60) -> None:
        super().__init__()
        self.target, self.board, self.ports, self.timeout = target, board, ports, timeout
        if "qemu" in ports:
            project.check_qemu(board)

    def run(self, runner_inputs: list[ms.runner.RunnerInput]) -> list[ms.runner.RunnerFuture]:
        free: queue.Queue = queue.Queue()
        for port in self.ports:
            free.put(port)

        def on_a_free_board(item):
            port = free.get()
            try:
                return self._run_one(item, port)
            finally:
                free.put(port)

        with concurrent.futures.ThreadPoolExecutor(len(self.ports)) as pool:
            return [_Done(r) for r in pool.map(on_a_free_board, runner_inputs)]

    def _run_one(self, item: ms.runner.RunnerInput, port: str) -> ms.runner.RunnerResult:
        out = Path(item.artifact_path)
        proj = out / PROJECT
        expected = np.load(out / "expected.npy")
        x = np.load(out / "x.npy")
        try:
            if port == "qemu":
                with link.qemu_board(self.board["run"]["command"],
                                     proj / "build" / "firmware-link.elf",
                                     float(self.board["run"].get("timeout_s", 300))) as board:
                    outputs, counts, clock = link.run_inputs(board, x, "int8",
                                                             expected.shape[1:])
            else:
                device, _, probe = port.partition("@")
                flashed = subprocess.run(
                    ["make", "-s", "-C", str(proj), "flash-link",
                     *([f"PROBE={probe}"] if probe else [])],
                    capture_output=True, text=True)
                if flashed.returncode:
                    raise TuningError(f"cannot flash the board at {port}: "
                                      f"{(flashed.stdout + flashed.stderr).strip()[-300:]}")
                board = link.BoardLink(device, self.timeout)
                try:
                    outputs, counts, clock = link.run_inputs(board, x, "int8",
                                                             expected.shape[1:])
                finally:
                    board.close()
        except link.LinkError as err:
            raise TuningError(f"tuning stopped, the board at {port} failed: {err}") from None
        wrong = _compare(outputs[0], expected)
        if wrong:
            return ms.runner.RunnerResult(None, wrong)
        return ms.runner.RunnerResult([float(counts[0]) / (clock or self.target["clock_hz"])],
                                      None)


# -- measuring and recording ------------------------------------------------------------------
@dataclass
class Measured:
    task: Task
    index: int
    secs: float | None           # None: failed (error says why)
    error: str | None = None


def measure(tasks_and_choices: list[tuple[Task, int]], builder, runner,
            target: tvm.target.Target, database: ms.database.Database | None) -> list[Measured]:
    """Build and run the candidates; each is committed to ``database`` as it is measured
    (a failed one without run time, so MetaSchedule never takes it as fast)."""
    inputs, schedules, params = [], [], {}
    for task, index in tasks_and_choices:
        if id(task) not in params:      # the same input and reference for every choice
            x = bench_input(task.prim, task.x_shape)
            expected = reference_output(task.prim, x, task.consts, task.y_shape)
            params[id(task)] = {
                k: tvm.runtime.tensor(np.ascontiguousarray(v))
                for k, v in zip(PARAMS, (x, *task.consts, expected))}
        schedules.append(candidate(task, index))
        inputs.append(ms.builder.BuilderInput(schedules[-1].mod, target, params[id(task)]))
    built = builder.build(inputs)
    where = [i for i, result in enumerate(built) if result.error_msg is None]
    futures = runner.run([ms.runner.RunnerInput(
        built[i].artifact_path, "cpu", ms.arg_info.ArgInfo.from_prim_func(
            tasks_and_choices[i][0].prim)) for i in where])
    results: list[ms.runner.RunnerResult | ms.builder.BuilderResult] = list(built)
    for i, future in zip(where, futures):
        results[i] = future.result()
    out = []
    for (task, index), sch, result in zip(tasks_and_choices, schedules, results):
        secs = None
        if result.error_msg is None:
            secs = float(sum(result.run_secs) / len(result.run_secs))
        if database is not None:
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, database.commit_workload(task.workload),
                None if secs is None else [secs], target,
                ms.arg_info.ArgInfo.from_prim_func(task.prim)))
        out.append(Measured(task, index, secs, result.error_msg))
    for result in built:
        if result.artifact_path:
            shutil.rmtree(result.artifact_path, ignore_errors=True)
    return out


def measured(database: ms.database.Database) -> dict[int, dict[int, float | None]]:
    """Per workload (its structural hash): choice -> seconds (None: failed) of the records
    ``database`` holds, the fastest of each choice's."""
    out: dict[int, dict[int, float | None]] = {}
    for record in database.get_all_tuning_records():
        times = out.setdefault(tvm_ffi.structural_hash(record.workload.mod), {})
        secs = record.run_secs
        value = float(sum(float(s) for s in secs) / len(secs)) if secs else None
        index = choice_of_record(record)
        if index not in times or (value is not None
                                  and (times[index] is None or value < times[index])):
            times[index] = value
    return out


def measured_choices(database: ms.database.Database, task: Task) -> dict[int, float | None]:
    """choice -> seconds (None: failed) of the records ``database`` holds for ``task``."""
    return measured(database).get(tvm_ffi.structural_hash(task.workload), {})


# -- the tuning run ----------------------------------------------------------------------------
def runners(target: Target, opts: dict) -> tuple[FirmwareBuilder, ms.runner.PyRunner, str, str]:
    """(builder, runner, where, unit of its times x clock) for ``opts["tune_port"]``: absent,
    the QEMU board; else a comma-separated list of boards to spread the candidates over,
    ``qemu`` (the link firmware on a QEMU board) or a real board's ``DEV[@PROBE]``."""
    port = str(opts.get("tune_port") or "")
    ports = [p.strip() for p in port.split(",") if p.strip()]
    if port and not ports:
        raise TuningError(f"tune_port: no port in {port!r}")
    if not ports:
        emulator = project.emulator_of(target)
        runner = QemuRunner(target, emulator)
        unit = "estimated cycles" if runner.timing is not None else "instructions"
        return (FirmwareBuilder(target, emulator), runner, f"on {emulator.name} (QEMU)", unit)
    if set(ports) == {"qemu"}:
        emulator = project.emulator_of(target)
        return (FirmwareBuilder(target, emulator, goal="link"),
                LinkRunner(target, emulator, ports),
                f"over the link on {len(ports)} x {emulator.name} (QEMU)", "instructions")
    if "qemu" in ports:
        raise TuningError("tune_port: QEMU boards and real boards measure different things "
                          "(instructions, cycles); tune on one kind at a time")
    if target.get("run"):
        raise TuningError(f"tune_port: {target.name} is a QEMU board; give a real board's "
                          "--target to measure on the board")
    return (FirmwareBuilder(target, target, goal="link"), LinkRunner(target, target, ports),
            f"on {len(ports)} x {target.name} at {', '.join(ports)}", "cycles")


def tune(graph: Graph, target: Target, trials: int, db_dir: Path, opts: dict,
         log: Log) -> None:
    """Measure candidates until ``db_dir`` holds ``trials`` records (module doc)."""
    db_dir = Path(db_dir)
    builder, runner, where, unit = runners(target, opts)
    try:
        _check_dir(db_dir)
        with locked(db_dir):
            _tune(graph, target, trials, db_dir, log, builder, runner, where, unit)
    finally:
        shutil.rmtree(builder.root, ignore_errors=True)


def _tune(graph, target, trials, db_dir, log, builder, runner, where, unit) -> None:
    open_database(db_dir, log, strict=True)     # a cut last line dropped, damage refused
    done = count_trials(db_dir)
    if done >= trials:
        log(f"tune: reusing tuning database {shown(db_dir)} ({done} trials >= {trials} asked): "
            "no re-tuning")
        return
    info = _info(db_dir)
    if info.get("unit", unit) != unit:
        raise TuningError(f"tuning database {shown(db_dir)} holds {info['unit']}, this run would "
                          f"measure {unit}: give this run its own --tuning-db")
    (db_dir / INFO).write_text(json.dumps({"board": target.name, "trials_asked": trials,
                                           "unit": unit}, indent=1))
    tvm_target = ms_target(target)
    database = ms.database.JSONDatabase(str(db_dir / WORKLOADS), str(db_dir / RECORDS),
                                        allow_missing=True)
    tasks = extract_tasks(graph, tvm_target)
    done_before = measured(database)
    todo, seen = [], {}
    for task in tasks:
        seen[task.name] = done_before.get(tvm_ffi.structural_hash(task.workload), {})
        todo += [(task, i) for i in range(len(task.choices)) if i not in seen[task.name]]
    todo = todo[:trials - done]
    log(f"tune: {len(tasks)} kernel calls with a choice, "
        f"{sum(len(t.choices) for t in tasks)} choices; measuring {len(todo)} "
        f"{where} in {unit}; database {shown(db_dir)}")
    started = time.monotonic()
    for start in range(0, len(todo), PER_ITER):
        batch = todo[start:start + PER_ITER]
        for m in measure(batch, builder, runner, tvm_target, database):
            seen[m.task.name][m.index] = m.secs
            if m.error:
                log(f"tune: {m.task.name} choice {m.task.choices[m.index]}: failed: "
                    f"{m.error}")
        log(f"tune: {done + start + len(batch)}/{trials} trials, "
            f"{time.monotonic() - started:.0f} s; {progress(seen, target, unit)}")
    log(f"tune: done, {count_trials(db_dir)} trials in {shown(db_dir)}")


def _info(db_dir: Path) -> dict:
    try:
        info = json.loads((Path(db_dir) / INFO).read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def progress(seen: dict[str, dict[int, float | None]], target: Target, unit: str) -> str:
    """The best so far: calls whose default and another choice are measured, and what their
    fastest choices save against their defaults."""
    default = best = 0.0
    faster = compared = 0
    for times in seen.values():
        ok = {i: t for i, t in times.items() if t is not None}
        if 0 in ok and len(ok) > 1:
            compared += 1
            default += ok[0]
            best += min(ok.values())
            faster += min(ok.values()) < ok[0]
    if not compared:
        return "no call compared yet"
    clock = target["clock_hz"]
    return (f"best so far: {faster} of {compared} compared calls faster than their default, "
            f"{default * clock / 1e6:.3f} M -> {best * clock / 1e6:.3f} M {unit} "
            f"({(1 - best / default) * 100:.1f} % less)")


def _check_dir(db_dir: Path) -> None:
    """One error line for a database directory that cannot be one (before anything runs)."""
    probe = db_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise TuningError(f"tuning database {shown(db_dir)}: {probe} is not a directory")
    try:
        db_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=db_dir):
            pass
    except OSError as err:
        raise TuningError(f"tuning database {shown(db_dir)} is not writable: "
                          f"{err.strerror or err}") from None


# -- building with the database ---------------------------------------------------------------
def tuned_graph(graph: Graph, target: Target, db_dir: Path, log: Log
                ) -> tuple[Graph, dict | None]:
    """``graph`` (the model lowered untuned) with the database's choices (module doc), and
    what the bundle records of them; (``graph``, None) without a database."""
    database = open_database(db_dir, log, strict=True)
    if database is None:
        return graph, None
    tvm_target = ms_target(target)
    picks, times = [], measured(database)
    for task in extract_tasks(graph, tvm_target):
        seen = {i: s for i, s in times.get(tvm_ffi.structural_hash(task.workload), {}).items()
                if s is not None}
        if 0 not in seen:
            continue                     # the default unmeasured: nothing to compare with
        index = min(seen, key=lambda i: (seen[i], i))
        if index != 0 and seen[index] < seen[0]:
            picks.append((task, index, seen[0], seen[index]))
    # the largest savings first, each only where its scratch fits the untuned build's memory
    # plan, which every other buffer keeps
    keep = project.plan_memory(graph)
    graph = dataclasses.replace(graph, keep_plan=keep)
    taken: dict[str, tirx.PrimFunc] = {}
    kernels = []
    for task, index, default, best in sorted(picks, key=lambda p: p[3] - p[2]):
        trial = {**taken, task.name: apply_choice(task.prim, index, tvm_target)}
        try:
            project.plan_memory(with_choices(graph, trial))
        except BackendError:
            log(f"build: not taking {task.name}'s tuned choice {task.choices[index]}: its "
                f"scratch does not fit the {keep[0].arena_bytes}-byte arena beside the "
                "tensors live at that step")
            continue
        taken = trial
        kernels.append({"kernel": task.name, "choice": task.choices[index],
                        "default": task.choices[0], "secs_default": default,
                        "secs_tuned": best})
    n, unit, clock = count_trials(db_dir), _info(db_dir).get("unit", "cycles"), target["clock_hz"]
    log(f"build: using tuning database {shown(db_dir)} ({n} trials): {len(kernels)} kernel calls "
        f"take a tuned choice ({unit} of the call alone, measured when tuning):")
    for k in sorted(kernels, key=lambda k: k["secs_tuned"] - k["secs_default"]):
        a, b = k["secs_default"] * clock, k["secs_tuned"] * clock
        changed = ", ".join(f"{f} {k['default'][f]} -> {k['choice'][f]}"
                            for f in nnlib.KNOB_FIELDS if k["default"][f] != k["choice"][f])
        log(f"  {k['kernel']:<28} {changed:<28} {a:>12,.0f} -> {b:>12,.0f} "
            f"({(b / a - 1) * 100:+.1f} %)")
    return with_choices(graph, taken), {"tuning_db": shown(db_dir), "tuning_trials": n,
                                        "unit": unit,
                                        "kernels": sorted(kernels, key=lambda k: k["kernel"])}


def with_choices(graph: Graph, prims: dict[str, tirx.PrimFunc]) -> Graph:
    """A copy of ``graph`` whose library kernels ``prims`` names are emitted from the given
    PrimFuncs (the same call, another schedule choice): their C and their scratch change."""
    kernels, library = dict(graph.kernels), dict(graph.library)
    tensors = dict(graph.tensors)
    steps = []
    for i, step in enumerate(graph.steps):
        step = dataclasses.replace(step)
        if step.kernel in prims:
            library[step.kernel] = prims[step.kernel]
            kernels[step.kernel] = nnlib.emit(step.kernel, prims[step.kernel])
            if step.workspace:
                del tensors[step.workspace]
            step.workspace = None
            scratch = kernels[step.kernel].workspace_bytes
            if scratch:
                step.workspace = f"ws{i}"
                tensors[step.workspace] = Tensor(step.workspace, (scratch,), "uint8",
                                                 "workspace")
        steps.append(step)
    return dataclasses.replace(graph, tensors=tensors, steps=steps, kernels=kernels,
                               library=library)


def kernel_library_digest() -> str:
    """sha256 of the kernel library's sources: what a database's measurements were made with
    (another version of the kernels starts another default database)."""
    digest = hashlib.sha256()
    for name in ("sg_nn.h", "sg_kernels.h"):
        digest.update((project.FIRMWARE / name).read_bytes())
    return digest.hexdigest()


def options(opts: dict, model_sha256: str, target: Target) -> tuple[Path, int]:
    """(database dir, trials) from ``tune_trials`` / ``tuning_db``."""
    for key in ("rpc_tracker", "rpc_key"):
        if opts.get(key):
            raise TuningError(f"--{key.replace('_', '-')} is for Linux boards; a Cortex-M board "
                              "measures on QEMU, or on the board with --opt tune_port=PORT")
    db = opts.get("tuning_db")
    db_dir = Path(db) if db else default_db_dir(
        model_sha256, {"board": target.name, "cpu": list(target["cpu"]["flags"]),
                       "kernels": kernel_library_digest(), "cycle_model": mca.METHOD})
    return db_dir, trials_of(opts)
