"""Subprocess tests of compile/build.py, run.py and validate.py on small int8 models.

Host target (LLVM on this machine); outputs are compared with LiteRT's reference kernels,
bit for bit.  Every bad input must give ONE line ``error: ...`` on stderr, exit code 2, no
traceback and nothing half-written.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compile.measure import run_litert
from compile.measure import compare
from tests.factory import build_tflite, random_int8_inputs
from test_frontend import tanh_model
from compile.paths import REPO

BUILD, RUN, VALIDATE = (REPO / "compile" / f"{n}.py" for n in ("build", "run", "validate"))


def cli(script: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, env=env, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "factory_models"   # shared on-disk cache
    made = {name: build_tflite(name, out) for name in ("small_cnn", "identity_block", "conv_1x1")}
    made["tanh"] = tanh_model(out)
    return made


@pytest.fixture(scope="module")
def bundles(models, tmp_path_factory):
    """Host bundles built with the CLI (shared by the run/validate tests)."""
    out = tmp_path_factory.mktemp("cli_bundles")
    made = {}
    for name in ("small_cnn", "identity_block"):
        result = cli(BUILD, "--target", "host", "--model", models[name], "--out", out / name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(out / name)
        made[name] = out / name
    return made


def test_bundle_manifest(models, bundles):
    manifest = json.loads((bundles["small_cnn"] / "bundle.json").read_text())
    assert manifest["format"] == "sandglass-bundle" and manifest["format_version"] == 1
    assert manifest["target"]["name"] == "host" and manifest["target"]["tvm"]["kind"] == "llvm"
    model = manifest["model"]
    assert model["sha256"] == hashlib.sha256(models["small_cnn"].read_bytes()).hexdigest()
    assert model["path"] == str(models["small_cnn"].resolve())
    assert model["input"]["shape"] == [1, 16, 16, 1] and model["input"]["dtype"] == "int8"
    assert model["output"]["shape"] == [1, 10]
    assert ["CONV_2D", 3] in model["operators"]
    assert manifest["float_ops"] == {}          # integer only
    assert manifest["files"] and all((bundles["small_cnn"] / f).is_file()
                                     for f in manifest["files"])
    assert set(manifest["versions"]) >= {"sandglass", "tvm", "tvm_ffi"}
    assert "build.py --target host" in manifest["command"]


@pytest.mark.parametrize("name", ["small_cnn", "identity_block"])
def test_run_is_bit_exact_with_litert(name, models, bundles, tmp_path):
    x = random_int8_inputs(models[name], 6, seed=5)
    np.save(tmp_path / "in.npy", x)
    result = cli(RUN, "--target", "host", "--bundle", bundles[name], "--input", tmp_path / "in.npy",
                 "--output", tmp_path / "out.npy", "--json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npy")
    expected = run_litert(models[name], x, reference=True)
    assert out.dtype == expected.dtype == np.int8 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["samples"] == 6 and metrics["target"] == "host"
    assert sorted(os.listdir(tmp_path)) == ["in.npy", "m.json", "out.npy"]   # no temp files


def test_validate_json_fashion_mnist(models, bundles):
    result = cli(VALIDATE, "--target", "host", "--model", models["small_cnn"],
                 "--bundle", bundles["small_cnn"], "--n", 30, "--json")
    report = json.loads(result.stdout)
    assert report["inputs"] == "Fashion-MNIST test" and report["n"] == 30
    for key in ("top1_agreement_pct", "equal_values_pct", "max_abs_diff_lsb", "rmse_lsb",
                "top1_accuracy_reference_pct", "top1_accuracy_target_pct", "target_metrics"):
        assert key in report
    assert report["bit_exact"] and report["passed"] and result.returncode == 0
    assert report["max_abs_diff_lsb"] == 0 and report["equal_values_pct"] == 100.0
    assert report["top1_agreement_pct"] == 100.0


def test_validate_builds_when_no_bundle_random_inputs(models, tmp_path):
    """Input 6x6x8 is not an image: seeded random inputs; the bundle goes to a temp dir."""
    result = cli(VALIDATE, "--target", "host", "--model", models["conv_1x1"], "--n", 10,
                 "--json", tmp_path / "r.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "BIT-EXACT" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"].startswith("random") and report["bit_exact"]
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_compare_metrics(models):
    """The numbers validate.py reports, on hand-made outputs (2 samples x 3 values)."""
    ref = np.array([[1, 5, 2], [7, 0, 0]], np.int8)
    act = np.array([[1, 5, 2], [7, 0, 3]], np.int8)
    got = compare(ref, act)
    assert got["bit_exact"] is False and got["max_abs_diff_lsb"] == 3
    assert got["equal_values_pct"] == pytest.approx(100 * 5 / 6)
    assert got["rmse_lsb"] == pytest.approx(np.sqrt(9 / 6))
    assert got["top1_agreement_pct"] == 100.0
    act[1] = [0, 0, 9]
    assert compare(ref, act)["top1_agreement_pct"] == 50.0
    assert compare(ref, ref.copy())["bit_exact"] is True


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

def _damaged(models, tmp_path, kind: str) -> Path:
    data = models["small_cnn"].read_bytes()
    path = tmp_path / f"{kind}.tflite"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":           # root table offset points far past the end
        path.write_bytes(b"\xff\xff\xff\x7f" + data[4:])
    elif kind == "not_tflite":
        path.write_text("this is a text file, not a model\n")
    return path


@pytest.mark.parametrize("kind, words", [
    ("truncated", ["truncated or corrupt"]),
    ("corrupt", ["truncated or corrupt"]),
    ("not_tflite", ["not a TFLite model"]),
    ("tanh", ["unsupported operator TANH (version"]),
])
def test_build_rejects_bad_model(kind, words, models, tmp_path):
    model = models["tanh"] if kind == "tanh" else _damaged(models, tmp_path, kind)
    out = tmp_path / "out" / "bundle"
    result = cli(BUILD, "--target", "host", "--model", model, "--out", out)
    assert_user_error(result, *words)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_build_rejects_unknown_target_and_missing_model(models, tmp_path):
    out = tmp_path / "bundle"
    assert_user_error(cli(BUILD, "--target", "rpi9", "--model", models["small_cnn"], "--out", out),
                      "unknown target 'rpi9'", "host")
    assert_user_error(cli(BUILD, "--target", "host", "--model", tmp_path / "nope.tflite",
                          "--out", out), "not found")
    assert_user_error(cli(BUILD, "--out", out), "--target")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["shape", "dtype", "rank", "not_npy"])
def test_run_rejects_bad_input(case, models, bundles, tmp_path):
    x = random_int8_inputs(models["small_cnn"], 2)
    bad = {"shape": x[:, :8], "dtype": x.astype(np.float32), "rank": x[..., 0]}.get(case)
    path = tmp_path / "in.npy"
    if bad is None:
        path.write_bytes(b"not numpy")
    else:
        np.save(path, bad)
    result = cli(RUN, "--target", "host", "--bundle", bundles["small_cnn"], "--input", path,
                 "--output", tmp_path / "out.npy")
    words = {"shape": ["shape (2, 8, 16, 1)", "(N, 16, 16, 1)"], "dtype": ["float32", "int8"],
             "rank": ["shape (2, 16, 16)"], "not_npy": ["not a .npy"]}[case]
    assert_user_error(result, *words)
    assert os.listdir(tmp_path) == ["in.npy"]


def test_run_and_validate_reject_foreign_bundles(models, bundles, tmp_path):
    x = random_int8_inputs(models["small_cnn"], 1)
    np.save(tmp_path / "in.npy", x)
    assert_user_error(cli(RUN, "--target", "rpi4", "--bundle", bundles["small_cnn"], "--input",
                          tmp_path / "in.npy", "--output", tmp_path / "o.npy"),
                      "built for target 'host', not 'rpi4'")
    assert_user_error(cli(RUN, "--target", "host", "--bundle", tmp_path, "--input",
                          tmp_path / "in.npy", "--output", tmp_path / "o.npy"), "not a bundle")
    assert_user_error(cli(VALIDATE, "--target", "host", "--model", models["small_cnn"],
                          "--bundle", bundles["identity_block"], "--n", 2), "sha256 differs")
    assert os.listdir(tmp_path) == ["in.npy"]
