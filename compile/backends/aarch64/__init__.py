"""Raspberry Pi / Cortex-A backend (kind ``linux-aarch64``): aarch64 shared library + Python runner.

Build: ``tvm.compile`` for the board's LLVM target (``targets/rpi*.toml``: cortex-a53/a72 with
NEON, cortex-a76 with +dotprod so LLVM can use SDOT), optionally with MetaSchedule-tuned
schedules (``compile.llvm_cpu.tuning``), then ``export_library`` with the aarch64 cross compiler and
the static entry point of ``compile.llvm_cpu.static_main`` (the kernels called in order on static
storage, no VM) linked in. The bundle gets ``model.so`` (weights embedded as constants),
``run.py`` (standalone runner, needs only the aarch64 ``apache-tvm`` wheel) and a
``README.md`` with the commands for the Pi.

Run here: ``run.py`` under ``qemu-aarch64 -cpu <board cpu>`` in the arm64 Debian userland of
``compile.backends.aarch64.sysroot`` (prepared on first use). Then, unless ``--opt estimate=0``, one
more emulated run counts the guest instructions of ``--opt repeat=K`` (default 5) inferences on the
first sample with the trace plugin and estimates their cycles, ms at the board's clock and memory
traffic (``compile.backends.aarch64.counting``, ``compile.cyclemodel``).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import tvm

from compile.llvm_cpu import static_main
from compile.errors import BackendError
from compile.frontend import ModelInfo
from compile.targets import Target
from compile.backends.aarch64.counting import instructions_per_inference
from compile.backends.aarch64.userland import RUN_TIMEOUT_S, emulator_command, run_in_userland
from compile.llvm_cpu.build import compile_for_target

LIBRARY = "model.so"
RUNNER = "run.py"
README = "README.md"
RUNNER_SOURCE = Path(__file__).with_name("runner.py")


def check_toolchain(target: Target) -> str:
    """The cross compiler command; BackendError naming the Debian package if it cannot link."""
    tc = target.get("toolchain", {})
    cc = tc.get("cc", "aarch64-linux-gnu-gcc")
    if shutil.which(cc) is None:
        raise BackendError(f"cross compiler {cc} not found: apt-get install "
                           f"{tc.get('package', 'gcc-aarch64-linux-gnu')}")
    crt = subprocess.run([cc, "-print-file-name=crti.o"], capture_output=True, text=True)
    if not Path(crt.stdout.strip()).is_absolute():
        raise BackendError(f"{cc} cannot link shared libraries (no crti.o): apt-get install "
                           f"{tc.get('libc_package', 'libc6-dev-arm64-cross')}")
    return cc


def build(mod: tvm.IRModule, model: ModelInfo, target: Target, out_dir: Path,
          opts: dict) -> dict:
    """model.so (aarch64 ELF) + run.py + README.md in ``out_dir``."""
    cc = check_toolchain(target)
    from tvm.support import cc as tvm_cc

    built, tuned = compile_for_target(mod, model, target, opts)
    out_dir = Path(out_dir)
    static = static_main.export_library(built, out_dir / LIBRARY, cc=cc,
                                        fcompile=tvm_cc.cross_compiler(cc))
    shutil.copyfile(RUNNER_SOURCE, out_dir / RUNNER)
    (out_dir / README).write_text(_readme(model, target, tuned))
    return {"files": [LIBRARY, RUNNER, README], "library": LIBRARY, "runner": RUNNER,
            "entry": static_main.ENTRY if static else None,
            "emulator": target.get("emulator", {}).get("command"), **tuned}


def _readme(model: ModelInfo, target: Target, tuned: dict) -> str:
    pins = " ".join(f"{p}=={metadata.version(p)}" for p in ("apache-tvm", "apache-tvm-ffi"))
    shape = "x".join(map(str, model.input.shape))
    key = target.get("device", {}).get("rpc_key", target.name)
    tuned_line = (f"MetaSchedule-tuned ({tuned['tuning_trials']} trials)" if tuned.get("tuned")
                  else "untuned (default schedules)")
    return f"""# sandglass bundle for {target.name}: {target.description}

Model `{Path(model.path).name}` (sha256 `{model.sha256[:16]}…`), input {model.input.dtype}
{shape}, compiled by Apache TVM for `{json.dumps(target.tvm)}`, {tuned_line}.

| file | what |
| --- | --- |
| `{LIBRARY}` | aarch64 shared library: the kernels, weights embedded, with a static entry point `{static_main.ENTRY}(input, output)` and the Relax VM's `main` |
| `{RUNNER}` | standalone runner (numpy + the aarch64 `apache-tvm` wheel, no sandglass) |
| `bundle.json` | manifest: model input/output (shape, dtype, scale, zero point), versions |

## On the Raspberry Pi (64-bit Raspberry Pi OS / Debian bookworm, Python 3.11)

```sh
python3 -m venv ~/tvm && . ~/tvm/bin/activate
pip install {pins} numpy
scp -r <this directory> pi@<pi>:bundle && cd bundle       # from the build machine
python3 run.py --input inputs.npy --output outputs.npy   # int8 samples (N, {', '.join(map(str, model.input.shape[1:]))})
TVM_NUM_THREADS=4 python3 run.py --benchmark 100          # median latency (ms) of one inference
TVM_NUM_THREADS=1 python3 run.py --benchmark 100
```

## Tuning on the Pi through TVM RPC

```sh
python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190              # build machine
python -m tvm.exec.rpc_server --tracker <build machine>:9190 --key {key}   # on the Pi
python compile/build.py --target {target.name} --tune-trials 2000 --rpc-tracker <build machine>:9190 --rpc-key {key}
```

## Without a Pi (this repository)

```sh
python compile/run.py --target {target.name} --bundle <bundle> --input x.npy --output y.npy   # qemu-aarch64 {' '.join(target.get('emulator', {}).get('command', [])[1:])}, arm64 Debian userland
python compile/bench.py --target {target.name}           # instructions per inference vs LiteRT
```
"""


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BackendError("the bundle's run.py printed no report")


def run(bundle_dir: Path, manifest: dict, target: Target, inputs: np.ndarray,
        opts: dict) -> tuple[np.ndarray, dict]:
    """Run ``run.py`` of the bundle under qemu-aarch64; outputs + what was measured."""
    bundle_dir = Path(bundle_dir).absolute()
    threads = int(opts.get("threads", 1))
    with tempfile.TemporaryDirectory(prefix="sandglass-a64-") as tmp:
        x, y = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(x, np.ascontiguousarray(inputs))
        proc = run_in_userland(target, [str(bundle_dir / manifest.get("runner", RUNNER)),
                                        "--input", str(x), "--output", str(y)], threads=threads)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise BackendError(f"bundle run under {' '.join(emulator_command(target))} "
                               f"failed (exit {proc.returncode}): {tail}")
        outputs = np.load(y)
        report = _last_json(proc.stdout)
    metrics = {"emulator": " ".join(emulator_command(target)), "userland": "Debian bookworm arm64",
               "samples": report["samples"], "threads": threads}
    if str(opts.get("estimate", "1")) not in ("0", "off"):
        counted = instructions_per_inference(target, bundle_dir, runner=manifest.get("runner", RUNNER),
                                             repeat=int(opts.get("repeat", 5)), sample=inputs[:1])
        metrics["instructions_per_inference"] = counted["tvm"]
        metrics.update(counted["estimates"]["tvm"])
    return outputs, metrics


def run_batch(target: Target, jobs: list[tuple[Path, dict, np.ndarray]]) -> list:
    """Several bundles on their inputs in ONE emulated process (Python and the TVM runtime
    start once, about 10 s, instead of once per bundle).  Returns, per job, its outputs or
    a ``BackendError`` naming why that job failed."""
    if not jobs:
        return []
    with tempfile.TemporaryDirectory(prefix="sandglass-a64-batch-") as tmp:
        spec = []
        for i, (bundle_dir, _manifest, inputs) in enumerate(jobs):
            x, y = Path(tmp) / f"in{i}.npy", Path(tmp) / f"out{i}.npy"
            np.save(x, np.ascontiguousarray(inputs))
            spec.append([str(Path(bundle_dir).absolute()), str(x), str(y)])
        (Path(tmp) / "jobs.json").write_text(json.dumps(spec))
        first = Path(spec[0][0]) / jobs[0][1].get("runner", RUNNER)
        proc = run_in_userland(target, [str(first), "--batch", str(Path(tmp) / "jobs.json")],
                               timeout=RUN_TIMEOUT_S + 60 * len(jobs))
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise BackendError(f"batch run under {' '.join(emulator_command(target))} "
                               f"failed (exit {proc.returncode}): {tail}")
        errors = _last_json(proc.stdout)["errors"]
        return [BackendError(errors[str(i)]) if str(i) in errors else np.load(s[2])
                for i, s in enumerate(spec)]
