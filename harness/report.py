"""What the identity tensor multiplier saves, measured on every target:
``python harness/report.py [--targets host,rpi4,...] [--models ...] [--quick] --out reports/NAME``.

MobileNeXt (https://arxiv.org/abs/2007.02269) only reported FLOPs and ImageNet accuracy for the identity
tensor multiplier. This report adds, per model: the analytical costs of the int8 graph
(``harness.analysis``), and per target: bit-exact agreement with LiteRT's reference kernels first, then
speed (host ms, or instructions under QEMU) and memory (arena, flash), plus TFLite Micro's arena and the
trained accuracy. Writes ``report.json``, ``report.md`` and PNG plots into ``--out`` (built in a temp dir
and renamed: never half-written).

Exit codes: 0 all good; 1 the report is complete but some target failed or disagreed (marked in it);
2 bad input (one ``error:`` line).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from harness.models import CATALOG, DEFAULT_MODEL, ModelSpecError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "sandglass-report"
SCHEMA_VERSION = 1
DEFAULT_TARGETS = ("host", "rpi4", "mps2-an386", "mps2-an500", "mps3-an547")
DEFAULT_CACHE = REPO / "build" / "harness-cache"
# (samples checked for agreement, timing repeats): full run / --quick
SAMPLES = {False: 8, True: 2}
REPEATS = {False: 50, True: 5}
# inferences per program for qemu-user instruction counting (compile/bench.py --repeat): full / --quick
AARCH64_REPEAT = {False: 10, True: 3}
EXIT_FAILED, EXIT_USAGE = 1, 2
PACKAGES = ("apache-tvm", "apache-tvm-ffi", "ai-edge-litert", "tflite-micro", "tensorflow", "tf-keras",
            "numpy", "matplotlib")


class UsageError(ValueError):
    """Bad command line: one ``error:`` line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help=f"comma-separated target names or aliases (default {','.join(DEFAULT_TARGETS)})")
    p.add_argument("--models", default=",".join(CATALOG),
                   help="comma-separated catalog names or .tflite paths (default: all of "
                        f"{', '.join(CATALOG)})")
    p.add_argument("--quick", action="store_true",
                   help="reuse built models and bundles from --cache, few samples and repeats")
    p.add_argument("--out", required=True, type=Path, help="report directory to write (e.g. reports/NAME)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"built models and bundles (default {DEFAULT_CACHE.relative_to(REPO)})")
    p.add_argument("--samples", type=int, help="inputs checked for bit-exact agreement (default 8, quick 2)")
    p.add_argument("--repeats", type=int, help="timing repeats on the host (default 50, quick 5)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="bundles built in parallel before anything is measured (default: CPU count); "
                        "measurements always run one at a time")
    p.add_argument("--threads", type=int, default=1, help="threads for host timing, TVM and LiteRT (default 1)")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: redo report.md and the plots from --out/report.json")
    args = p.parse_args(argv)
    args.samples = args.samples or SAMPLES[args.quick]
    args.repeats = args.repeats or REPEATS[args.quick]
    if args.samples < 1 or args.repeats < 1 or args.threads < 1 or args.jobs < 1:
        raise UsageError("--samples, --repeats and --threads must be >= 1")
    return args


def resolve_targets(spec: str) -> list:
    from compile.targets import UnknownTarget, get_target

    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UsageError("--targets is empty")
    targets = []
    for name in names:
        try:
            target = get_target(name)
        except UnknownTarget as err:
            raise UsageError(str(err)) from None
        if target.name not in [t.name for t in targets]:
            targets.append(target)
    return targets


def check_models(spec: str) -> list[str]:
    models = [s.strip() for s in spec.split(",") if s.strip()]
    if not models:
        raise UsageError("--models is empty")
    for m in models:
        if m.endswith(".tflite"):
            if not Path(m).is_file():
                raise UsageError(f"model file {m} does not exist")
        elif m not in CATALOG:
            raise UsageError(f"unknown model '{m}' (known: {', '.join(CATALOG)}, or a path to a .tflite)")
    return list(dict.fromkeys(models))


def check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "report.json").is_file())):
        raise UsageError(f"{out} exists and is not a report directory; refusing to overwrite it")


# ----------------------------------------------------------------------------------------------------------
# What each target kind measures, stated in the report next to every number.
def measure_note(target) -> str:
    if target.kind == "host":
        return f"wall-clock ms on this machine's CPU ({cpu_name()})"
    if target.kind == "linux-aarch64":
        emu = " ".join(target.get("emulator", {}).get("command", []))
        return f"guest instructions per inference under `{emu}` (qemu-user; instructions, not cycles or ms)"
    run = " ".join(str(a) for a in target.get("run", {}).get("command", [])[:3]) or "QEMU"
    return f"instructions per inference under `{run}` (QEMU system emulation, -icount; not cycles)"


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


def prebuild(entries, targets, args, commands: list[str]) -> dict:
    """Build every (model, target) bundle, ``--jobs`` at a time, before any measurement (so no timing
    runs beside a compiler). Returns {(model, target): (build seconds, StepFailed or None)}."""
    from harness import measure

    def one(entry, target):
        start = time.perf_counter()
        try:
            measure.build_bundle(entry.path, entry.sha256(), target.name,
                                 args.cache / "bundles" / entry.name / target.name, args.quick, commands)
            error = None
        except measure.StepFailed as err:
            error = err
        return (entry.name, target.name), (round(time.perf_counter() - start, 1), error)

    print(f"[report] building {len(entries) * len(targets)} bundles, {args.jobs} at a time",
          file=sys.stderr, flush=True)
    return dict(_pool_map(one, [(e, t) for e in entries for t in targets], args.jobs))


def prepare_model(entry, args, failures: list[dict]) -> tuple[dict, np.ndarray, np.ndarray]:
    """(model record with analysis and TFLite Micro's arena, inputs, LiteRT reference outputs)."""
    from compile.reference import run_litert
    from harness import measure
    from harness.analysis import analyze

    print(f"[report] {entry.name}: {entry.source}", file=sys.stderr, flush=True)
    result = {**entry.to_json(), "analysis": analyze(entry.path)}
    inputs = measure.model_inputs(entry.path, args.samples)
    expected = run_litert(entry.path, inputs, reference=True)
    result["inputs"] = {"samples": len(inputs), "source": "Fashion-MNIST test images, quantized with the "
                        "model's input scale/zero point", "shape": list(inputs.shape)}
    try:
        result["tflm"] = measure.tflm_arena(entry.path, inputs[0])
    except RuntimeError as err:
        result["tflm"] = {"error": str(err)}
        failures.append({"model": entry.name, "target": "tflite-micro", "stage": "arena", "error": str(err)})
    return result, inputs, expected


def run_target(entry, target, inputs, args, commands: list[str], built: dict) -> tuple[dict, np.ndarray | None]:
    """Outputs and metrics of one bundle on ``inputs``: (target record, outputs or None when it failed)."""
    from harness import measure

    bundle = args.cache / "bundles" / entry.name / target.name
    rec = {"measures": measure_note(target), "bundle": str(bundle)}
    try:
        start = time.perf_counter()
        seconds, error = built.get((entry.name, target.name), (None, None))
        if error is not None:
            raise error
        manifest = measure.build_bundle(entry.path, entry.sha256(), target.name, bundle,
                                        args.quick or seconds is not None, commands)
        rec["build_seconds"] = seconds if seconds is not None else round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        outputs, metrics = measure.run_bundle(target.name, bundle, inputs, args.cache / "runs" / entry.name /
                                              target.name, commands)
        rec["run_seconds"] = round(time.perf_counter() - start, 1)
    except measure.StepFailed as err:
        rec.update(status="failed", error=str(err), command=err.command)
        return rec, None
    backend_entries = {k: v for k, v in manifest.items()
                       if k not in ("model", "target", "versions", "files", "command", "created")}
    rec.update(status="ran", raw={"run": metrics, "bundle": backend_entries})
    return rec, outputs


def judge_agreement(result: dict, targets, outputs: dict, expected: np.ndarray, failures: list[dict]) -> None:
    """Bit-exact gate: record each target's agreement; if any target differs, withhold every speed."""
    from harness import measure

    per_target = result["targets"]
    agreement = {t: measure.compare(out, expected) for t, out in outputs.items()}
    all_equal = bool(agreement) and all(a["equal"] for a in agreement.values())
    result["agreement"] = {"reference": "LiteRT BUILTIN_REF (reference kernels)", "samples": len(expected),
                           "targets": agreement, "all_equal": all_equal,
                           "not_run": [t.name for t in targets if t.name not in agreement]}
    for name, rec in per_target.items():
        if rec["status"] == "failed":
            failures.append({"model": result["name"], "target": name, "error": rec["error"]})
    if not all_equal:
        bad = [t for t, a in agreement.items() if not a["equal"]] or ["(no target ran)"]
        for t in agreement:
            per_target[t]["status"] = "withheld"
            per_target[t]["error"] = f"speed withheld: outputs of {', '.join(bad)} differ from LiteRT reference"
        failures.append({"model": result["name"], "target": ",".join(bad), "error": "outputs disagree"})


def measure_speed(entry, target, rec: dict, sample, args, commands: list[str], failures: list[dict]) -> None:
    """Speed and memory of one target that ran and agreed, into ``rec``."""
    from harness import measure

    try:
        rec.update(speed(entry, target, Path(rec["bundle"]), sample, args, commands, rec["raw"]))
        rec["status"] = "ok"
    except (measure.StepFailed, RuntimeError) as err:
        rec.update(status="failed", error=str(err))
        failures.append({"model": entry.name, "target": target.name, "stage": "speed", "error": str(err)})


def measure_models(entries, targets, args, commands: list[str], failures: list[dict], models: list[dict],
                   report: dict) -> None:
    """Everything the report says about each model, in phases: bundles (parallel); analysis, reference
    outputs and TFLite Micro (one model at a time); outputs of every bundle (parallel); the bit-exact gate;
    instruction counts under emulation (parallel: they do not depend on the machine's load); host
    wall-clock timings last, one at a time, with nothing else running."""
    built = prebuild(entries, targets, args, commands)
    prepared = []
    for entry in entries:
        result, inputs, expected = prepare_model(entry, args, failures)
        result["targets"] = {}
        models.append(result)
        prepared.append((entry, result, inputs, expected))
    print("[report] running every bundle on the same inputs", file=sys.stderr, flush=True)
    items = [(e, t, inputs, args, commands, built) for e, _, inputs, _ in prepared for t in targets]
    runs = iter(_pool_map(run_target, items, args.jobs))
    for entry, result, inputs, expected in prepared:
        outputs = {}
        for target in targets:
            rec, out = next(runs)
            result["targets"][target.name] = rec
            if out is not None:
                outputs[target.name] = out
        judge_agreement(result, targets, outputs, expected, failures)
    write_report(report, args.out)
    todo = [(entry, target, result["targets"][target.name], inputs[0])
            for entry, result, inputs, _ in prepared for target in targets
            if result["targets"][target.name]["status"] == "ran"]
    print("[report] counting instructions under emulation", file=sys.stderr, flush=True)
    _pool_map(lambda e, t, rec, x: measure_speed(e, t, rec, x, args, commands, failures),
              [item for item in todo if item[1].kind != "host"], args.jobs)
    print("[report] host timings, one at a time", file=sys.stderr, flush=True)
    for entry, target, rec, x in todo:
        if target.kind == "host":
            measure_speed(entry, target, rec, x, args, commands, failures)


def speed(entry, target, bundle: Path, sample, args, commands: list[str], raw: dict) -> dict:
    """Speed and memory of one target, flat fields; only called once every target agreed with the reference.
    ``raw`` holds the target's run.py metrics and bundle.json backend entries."""
    from harness import measure

    if target.kind == "host":
        commands.append(f"# host timing in-process: TVM_NUM_THREADS={args.threads}, {args.repeats} runs each")
        return {"tvm_ms": measure.host_latency_tvm(bundle, sample, args.repeats, args.threads),
                "litert_ms": measure.host_latency_litert(entry.path, sample, args.repeats, args.threads),
                "litert_kernels": "LiteRT default op resolver (XNNPACK delegate + optimized kernels)"}
    if target.kind == "linux-aarch64":
        counts = measure.aarch64_instructions(target.name, bundle, entry.path, AARCH64_REPEAT[args.quick],
                                              commands)
        return {"tvm_instructions": counts["tvm"], "litert_instructions": counts["litert-xnnpack"],
                "litert_builtin_instructions": counts.get("litert-builtin"),
                "litert_kernels": "LiteRT aarch64 wheel, default resolver (XNNPACK); "
                                  "litert_builtin_instructions: built-in kernels without delegates",
                "bench": counts}
    run = raw["run"]   # cortex-m: everything comes with the run (compile/backends/cortexm.py metrics)
    flash = [run.get(f"flash_{k}_bytes") for k in ("code", "weights", "other")]
    return {"tvm_instructions": run.get("instructions_per_inference"),
            "instructions_per_mac": run.get("instructions_per_mac"),
            "arena_bytes": run.get("arena_bytes"), "arena_lower_bound": run.get("arena_lower_bound"),
            "arena_live_bound": run.get("arena_live_bound"),
            "flash_bytes": sum(flash) if None not in flash else None}


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


def build_report(args, targets, model_specs: list[str]) -> dict:
    """Measure every model; the report so far is written to --out once every bundle ran (a long run can be
    read while it goes on), marked ``"complete": false`` until the end."""
    from harness.models import resolve

    commands: list[str] = []
    failures: list[dict] = []
    models: list[dict] = []
    report = _skeleton(args, targets, models, commands, failures)
    entries = []
    for spec in model_specs:
        try:
            entries.append(resolve(spec, args.cache))
        except (ModelSpecError, ValueError, OSError) as err:
            failures.append({"model": spec, "target": None, "stage": "model", "error": str(err)})
    measure_models(entries, targets, args, commands, failures, models, report)
    report["complete"] = True
    return report


def _skeleton(args, targets, models, commands, failures) -> dict:
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "harness/report.py", *sys.argv[1:]]),
        **environment(targets),
        "settings": {"quick": args.quick, "samples": args.samples, "repeats": args.repeats,
                     "threads": args.threads, "jobs": args.jobs,
                     "cache": str(args.cache)},
        "targets": {t.name: {"kind": t.kind, "description": t.description, "tvm": t.tvm,
                             "measures": measure_note(t)} for t in targets},
        "models": models,
        "default_model": DEFAULT_MODEL,
        "commands": commands,
        "failures": failures,
        "complete": False,
    }


def write_report(report: dict, out: Path) -> None:
    """report.json, report.md and the plots into a temp dir next to ``out``, then renamed to ``out``."""
    from harness.markdown import render
    from harness.plots import make_plots

    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        report["plots"] = make_plots(report, tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "report.md").write_text(render(report))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
            os.replace(out, old / "report")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def render_only(out: Path) -> int:
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        raise UsageError(f"{out}/report.json is missing or not JSON; run a report first") from None
    if report.get("schema") != SCHEMA or report.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{out}/report.json is not a {SCHEMA} v{SCHEMA_VERSION} report")
    write_report(report, out)
    print(out / "report.md")
    return EXIT_FAILED if report["failures"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.render_only:
            return render_only(args.out)
        targets = resolve_targets(args.targets)
        model_specs = check_models(args.models)
        check_out(args.out)
    except UsageError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
    # TVM sizes its thread pool from this when first used (host timing runs in this process).
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = build_report(args, targets, model_specs)
    write_report(report, args.out)
    print(args.out / "report.md")
    for f in report["failures"]:
        print(f"failed: {f['model']} on {f['target']}: {f['error']}", file=sys.stderr)
    return EXIT_FAILED if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
