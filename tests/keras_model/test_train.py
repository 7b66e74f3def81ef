"""Data, QAT training, int8 export and evaluation (keras_model/data.py, qat.py, export.py, train.py, evaluate.py).

One tiny end-to-end run (256 Fashion-MNIST images at 32x32, one float and one QAT epoch) is shared by the
tests; the committed models under models/ get the same integer-only checks plus their recorded accuracy.
"""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from keras_model import data
from keras_model.export import integer_only_problems, read_tflite
from compile.paths import REPO as ROOT

PY = sys.executable


def run(*args):
    return subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_usage_error(proc, needle):
    """Bad input: exit code 2 and exactly one line 'error: ...' on stderr mentioning needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Train -> QAT -> export a tiny MobileNeXt (identity multiplier 1/2) in-process; returns its paths."""
    from keras_model import train

    out = tmp_path_factory.mktemp("tiny") / "tiny"
    rc = train.main(["--preset", "mobilenext-mcu", "--resolution", "32", "--identity-multiplier", "0.5",
                     "--epochs", "1", "--qat-epochs", "1", "--batch-size", "64", "--limit", "256",
                     "--out", str(out)])
    assert rc == 0
    return out


def test_fashion_mnist_loading():
    x, y = data.load_dataset("test", 64, 3, limit=50)
    assert x.shape == (50, 64, 64, 3) and x.dtype == np.float32 and y.shape == (50,)
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(y) <= set(range(10))
    # Resizing keeps the picture: the 28x28 original equals the 64x64 image resized back (bilinear blur only).
    with gzip.open(data.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:50] / 255.0
    back = data.resize(x[..., :1], 28)[..., 0]
    assert np.abs(back - raw).mean() < 0.03


def test_quantize_input_rounds_half_away_from_zero():
    # scale 0.5: x/scale hits exact halves; TFLite's QUANTIZE uses std::round (half away from zero).
    x = np.array([0.25, 0.75, -0.25, -0.75, 100.0, -100.0], np.float32)
    assert data.quantize_input(x, 0.5, 0).tolist() == [1, 2, -1, -2, 127, -128]
    assert data.quantize_input(x, 0.5, -128).tolist() == [-127, -126, -128, -128, 72, -128]


def test_image_folder_split_is_deterministic(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(np.full((8, 8), 25 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    x_tr, y_tr = data.load_dataset("train", 16, 1, data_dir=tmp_path, seed=3)
    x_te, y_te = data.load_dataset("test", 16, 1, data_dir=tmp_path, seed=3)
    assert len(x_tr) == 16 and len(x_te) == 4 and sorted(set(y_te)) == [0, 1]
    again, _ = data.load_dataset("test", 16, 1, data_dir=tmp_path, seed=3)
    assert np.array_equal(x_te, again)
    assert data.num_classes(tmp_path) == 2


def test_tiny_run_writes_integer_only_model(tiny):
    buf = read_tflite(tiny.with_name("tiny_int8.tflite"))
    assert integer_only_problems(buf) == []
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=buf)
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    record = json.loads(tiny.with_name("tiny.json").read_text())
    assert record["config"]["identity_multiplier"] == 0.5 and record["config"]["resolution"] == 32
    assert record["dataset"]["train_images"] == 256 and record["tflite_bytes"] == len(buf)
    for key in ("float", "qat", "int8_tflite"):
        assert 0.0 <= record["accuracy"][key] <= 1.0
    assert tiny.with_name("tiny.keras").stat().st_size > 0
    assert not list(tiny.parent.glob(".*"))  # no temp files left behind


def test_evaluate_matches_direct_litert(tiny):
    from ai_edge_litert.interpreter import Interpreter

    model = tiny.with_name("tiny_int8.tflite")
    proc = run("keras_model/evaluate.py", "--model", str(model), "--limit", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # Direct LiteRT, one image at a time, own quantization arithmetic (round half away from zero).
    x, y = data.load_dataset("test", 32, 1, limit=64)
    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    correct = 0
    for img, label in zip(x, y):
        v = img[None].astype(np.float32) / np.float32(scale)
        q = np.clip(np.trunc(v + np.copysign(np.float32(0.5), v)) + zp, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        correct += int(interp.get_tensor(out["index"])[0].argmax() == label)
    assert result["n"] == 64 and result["accuracy"] == correct / 64
    assert_usage_error(run("keras_model/evaluate.py", "--model", str(model), "--data", str(tiny.parent / "no")),
                       "does not exist")


@pytest.mark.parametrize("tflite", sorted((ROOT / "models").glob("*_int8.tflite")), ids=lambda p: p.name)
def test_committed_model(tflite):
    buf = read_tflite(tflite)
    assert integer_only_problems(buf) == [] and len(buf) < 1_000_000
    record = json.loads(tflite.with_name(tflite.name.replace("_int8.tflite", ".json")).read_text())
    acc = record["accuracy"]
    assert record["dataset"]["test_images"] == 10000 and record["tflite_bytes"] == len(buf)
    assert acc["float"] - acc["int8_tflite"] <= 0.01  # QAT keeps int8 within 1 point of float


def test_bad_inputs(tmp_path):
    not_tflite = tmp_path / "model.tflite"
    not_tflite.write_bytes(b"this is not a flatbuffer")
    assert_usage_error(run("keras_model/evaluate.py", "--model", str(not_tflite)), "not a TFLite flatbuffer")
    assert_usage_error(run("keras_model/evaluate.py", "--model", str(tmp_path / "missing.tflite")),
                       "cannot read model")
    empty = tmp_path / "images"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(empty / "a" / "0.png")
    train_py = "keras_model/train.py"
    out = str(tmp_path / "out" / "m")
    assert_usage_error(run(train_py, "--preset", "mobilenext-mcu", "--out", out), "does not exist")
    # /proc is a directory nobody can create files in, not even root.
    assert_usage_error(run(train_py, "--preset", "mobilenext-mcu", "--out", "/proc/sandglass_model"),
                       "not writable")
    outdir = tmp_path / "ok"
    outdir.mkdir()
    assert_usage_error(run(train_py, "--arch", "resnet", "--out", str(outdir / "m")), "unknown model")
    assert_usage_error(run(train_py, "--preset", "mobilenext-mcu", "--data", str(tmp_path / "nope"),
                           "--out", str(outdir / "m")), "does not exist")
    assert_usage_error(run(train_py, "--preset", "mobilenext-mcu", "--data", str(empty),
                           "--out", str(outdir / "m")), "has no images")
    assert_usage_error(run(train_py, "--preset", "mobilenext-mcu", "--init-from", str(tmp_path / "no.keras"),
                           "--out", str(outdir / "m")), "does not exist")
    assert list(outdir.iterdir()) == []
