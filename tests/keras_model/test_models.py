"""Tests of the Keras models (MobileNeXt, MobileNetV2), the registry, the counting module and summary.py.

Parameter / MAC figures are checked against an independent pure-Python re-derivation of the MobileNeXt
reference code (github.com/zhoudaquan/rethinking_bottleneck_design, mobilenext/codebase/models/mnext.py)
and against keras.applications.MobileNetV2.
"""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

from keras_model import summary
from keras_model.counting import analyze
from keras_model.layers import IdentityMultiplierAdd
from keras_model.factory import DEFAULT_PRESET, create_model, list_models, list_presets, model_config
from compile.paths import REPO

SUMMARY = REPO / "keras_model" / "summary.py"
# Small models of every architecture (the archs' own defaults are the 224x224x3 / 1000-class networks).
SMALL = dict(width=0.35, resolution=32, channels=1, classes=4)


def _images(config, n=2, seed=0):
    shape = (n, config["resolution"], config["resolution"], config["channels"])
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


# --- independent re-derivation of the reference MXNet (PyTorch) counts ---------------------------------------

def _ref_make_divisible(v, divisor):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def reference_mobilenext_counts(width, resolution, channels, classes, scale_last_stage=False):
    """(params, MACs) of the reference MXNet, walking its SGBlock branches. Every conv has no bias and is
    followed by BatchNorm (2 trainable parameters per channel); MACs count convs and the final Linear."""
    params = macs = 0
    size = resolution

    def conv(cin, cout, k, stride, groups=1):
        nonlocal params, macs, size
        size = (size + 2 * (k // 2) - k) // stride + 1
        weights = k * k * (cin // groups) * cout
        params += weights + 2 * cout
        macs += weights * size * size

    div = 4 if width == 0.1 else 8
    inp = _ref_make_divisible(32 * width, div)
    conv(channels, inp, 3, 2)
    cfgs = [(2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2),
            (6, 384, 4, 1), (6, 576, 4, 2), (6, 960, 3, 1), (6, 1280, 1, 1)]
    for t, c, n, s in cfgs:
        oup = _ref_make_divisible(c * width, div)
        if c == 1280 and width < 1 and not scale_last_stage:
            oup = 1280
        for i in range(n):
            stride, keep = (s, n == 1 and s == 1) if i == 0 else (1, False)
            hidden = inp // t
            if hidden < oup / 6.0:
                hidden = _ref_make_divisible(math.ceil(oup / 6.0), 16)
            pointwise = [(inp, hidden, 1, 1, 1), (hidden, oup, 1, 1, 1)]
            if t == 2:
                layers = [(inp, inp, 3, 1, inp), *pointwise, (oup, oup, 3, stride, oup)]
            elif inp != oup and stride == 1 and not keep:
                layers = pointwise
            elif inp != oup and stride == 2 and not keep:
                layers = [*pointwise, (oup, oup, 3, stride, oup)]
            else:   # the full block always runs at stride 1 in the reference
                layers = [(inp, inp, 3, 1, inp), *pointwise, (oup, oup, 3, 1, oup)]
            for layer in layers:
                conv(*layer)
            inp = oup
    params += inp * classes + classes
    macs += inp * classes
    return params, macs


# --- registry -------------------------------------------------------------------------------------------------

def test_registry_lists():
    assert list_models() == ["mobilenetv2", "mobilenext"]
    assert {"mobilenext-1.0", "mobilenetv2-1.0", "mobilenext-mcu", "mobilenetv2-mcu"} <= set(list_presets())
    assert DEFAULT_PRESET == "mobilenext-mcu"
    assert model_config("mobilenext-mcu") == {
        "arch": "mobilenext", "width": 0.35, "resolution": 64, "channels": 1, "classes": 10,
        "identity_multiplier": 1.0, "scale_last_stage": True, "dropout": 0.2, "classifier_activation": None}
    assert model_config("mobilenetv2-mcu", width=0.5)["width"] == 0.5
    assert model_config("mobilenext")["resolution"] == 224


@pytest.mark.parametrize("name, overrides, message", [
    ("resnet50", {}, "unknown model"),
    ("mobilenext", {"width": 0}, "width must be > 0"),
    ("mobilenext", {"width": -1.0}, "width must be > 0"),
    ("mobilenext", {"identity_multiplier": 0.0}, "identity_multiplier must be in (0, 1]"),
    ("mobilenext-mcu", {"identity_multiplier": 1.5}, "identity_multiplier must be in (0, 1]"),
    ("mobilenetv2", {"identity_multiplier": 0.5}, "has no option identity_multiplier"),
    ("mobilenext", {"resolution": 31}, "resolution must be >= 32"),
    ("mobilenext-mcu", {"classes": 1}, "classes must be >= 2"),
    ("mobilenext", {"depth": 3}, "has no option depth"),
])
def test_registry_rejects_bad_config(name, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model(name, **overrides)


# --- every arch and preset: shape, save/load, TFLite -----------------------------------------------------------

SMALL_ARCHS = [(arch, SMALL) for arch in list_models()]
ALL_PRESETS = [(preset, {}) for preset in list_presets()]


@pytest.mark.parametrize("name, overrides", ALL_PRESETS + SMALL_ARCHS)
def test_output_shape(name, overrides):
    config = model_config(name, **overrides)
    model = create_model(name, **overrides)
    assert model.input_shape == (None, config["resolution"], config["resolution"], config["channels"])
    out = model(_images(config), training=False).numpy()
    assert out.shape == (2, config["classes"])
    assert np.all(np.isfinite(out))


# The 1.0 presets are the archs' default graphs at a larger size: saving them only costs time.
ROUND_TRIP = [(p, {}) for p in list_presets() if p.endswith("-mcu")] + [
    ("mobilenext", {**SMALL, "identity_multiplier": 0.25}), ("mobilenetv2", SMALL)]


@pytest.mark.parametrize("name, overrides", ROUND_TRIP)
def test_save_load_round_trip(name, overrides, tmp_path):
    config = model_config(name, **overrides)
    model = create_model(name, **overrides)
    x = _images(config)
    expected = model(x, training=False).numpy()

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)   # no custom_objects: the layers are registered serializable
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, rtol=1e-6, atol=1e-6)

    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(rebuilt(x, training=False).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert [type(l).__name__ for l in rebuilt.layers] == [type(l).__name__ for l in model.layers]


# Conversion takes long per op, so once per arch (presets only change sizes), with a partial shortcut.
@pytest.mark.parametrize("name, overrides", [("mobilenext", {**SMALL, "identity_multiplier": 0.5}),
                                             ("mobilenetv2", SMALL)])
def test_float_tflite_conversion(name, overrides):
    config = model_config(name, **overrides)
    model = create_model(name, **overrides)
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    x = _images(config, n=1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


# --- identity tensor multiplier ----------------------------------------------------------------------------------

@pytest.mark.parametrize("multiplier, channels, added", [
    (1.0, 12, 12), (0.5, 12, 6), (0.25, 12, 3), (0.35, 40, 14), (1 / 3, 48, 16), (0.3, 10, 3), (0.05, 12, 0)])
def test_identity_multiplier_adds_leading_channels(multiplier, channels, added):
    layer = IdentityMultiplierAdd(multiplier)
    assert layer.channels_added(channels) == added
    rng = np.random.default_rng(1)
    block_input = rng.normal(size=(2, 5, 5, channels)).astype(np.float32)
    block_output = rng.normal(size=(2, 5, 5, channels)).astype(np.float32)
    out = layer([block_input, block_output]).numpy()
    np.testing.assert_array_equal(out[..., :added], block_input[..., :added] + block_output[..., :added])
    np.testing.assert_array_equal(out[..., added:], block_output[..., added:])

    clone = IdentityMultiplierAdd.from_config(layer.get_config())
    assert clone.multiplier == layer.multiplier and clone.get_config() == layer.get_config()


def test_identity_multiplier_validation():
    for bad in (0.0, -0.5, 1.01):
        with pytest.raises(ValueError, match="identity multiplier"):
            IdentityMultiplierAdd(bad)
    with pytest.raises(ValueError, match="same shape"):
        IdentityMultiplierAdd(0.5)([keras.Input((4, 4, 8)), keras.Input((4, 4, 16))])


@pytest.mark.parametrize("multiplier", [1.0, 0.5, 0.25])
def test_identity_multiplier_inside_mobilenext(multiplier):
    """In a built model, each shortcut adds exactly the first floor(C*m) channels of its block input."""
    overrides = {"identity_multiplier": multiplier}
    model = create_model("mobilenext-mcu", **overrides)
    shortcuts = [l for l in model.layers if isinstance(l, IdentityMultiplierAdd)]
    # The reference has a shortcut in every repeated block: stages 3-7 have 2+2+3+3+2 of them.
    assert [l.name for l in shortcuts] == [
        f"block{s}_{i}_shortcut" for s, n in [(3, 3), (4, 3), (5, 4), (6, 4), (7, 3)] for i in range(2, n + 1)]
    probe = keras.Model(model.input, [t for l in shortcuts for t in (*l.input, l.output)])
    tensors = probe(_images(model_config("mobilenext-mcu"), seed=3), training=False)
    for layer, (block_input, block_output, out) in zip(shortcuts, zip(*[iter(tensors)] * 3)):
        channels = out.shape[-1]
        k = math.floor(channels * multiplier)
        assert layer.channels_added(channels) == k
        np.testing.assert_allclose(out[..., :k], block_input[..., :k] + block_output[..., :k], rtol=1e-6)
        np.testing.assert_array_equal(out[..., k:], block_output[..., k:])
    totals = analyze(model)["shortcuts"]
    assert totals["count"] == len(shortcuts)
    assert totals["channels_added"] == sum(math.floor(l.output.shape[-1] * multiplier) for l in shortcuts)


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")   # the converter's, about int8 inputs
def test_identity_multiplier_converts_to_builtin_int8_ops():
    inputs = keras.Input((6, 6, 8))
    a = keras.layers.Conv2D(8, 1, name="a")(inputs)
    b = keras.layers.Conv2D(8, 1, name="b")(inputs)
    model = keras.Model(inputs, IdentityMultiplierAdd(0.5, name="shortcut")([a, b]))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.random((1, 6, 6, 8), dtype=np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    interpreter = Interpreter(model_content=converter.convert())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"STRIDED_SLICE", "ADD", "CONCATENATION"} <= ops <= {"CONV_2D", "STRIDED_SLICE", "ADD",
                                                                 "CONCATENATION"}
    assert interpreter.get_output_details()[0]["shape"].tolist() == [1, 6, 6, 8]


# --- counts --------------------------------------------------------------------------------------------------

def test_mobilenext_paper_figures(capsys):
    """summary.py's JSON (run in-process here; the subprocess runs are the bad-input tests below)."""
    summary.main(["--arch", "mobilenext", "--width", "1.0", "--resolution", "224", "--channels", "3",
                  "--classes", "1000", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == 3_535_416
    assert report["macs"] == 311_342_592          # 311.3 M
    assert (report["params"], report["macs"]) == reference_mobilenext_counts(1.0, 224, 3, 1000)
    assert report["shortcuts"]["count"] == 12 == sum("shortcut" in row for row in report["layers"])
    assert report["layers"][0]["op"] == "Input" and report["layers"][-1]["name"] == "logits"
    # One block of each SGBlock branch, derived by hand from the reference: layers, ReLU6 places, strides.
    rows = {r["name"]: (r["op"], tuple(r["output_shape"])) for r in report["layers"]}
    dw, dw_relu, pw, pw_relu = "DepthwiseConv2D+BN", "DepthwiseConv2D+BN+ReLU6", "Conv2D+BN", "Conv2D+BN+ReLU6"
    expected = {
        "stem": ("Conv2D+BN+ReLU6", (112, 112, 32)),
        # t = 2: dw-pw-pw-dw, stride 2 on the last depthwise, hidden 32 // 2
        "block1_1_dw1": (dw_relu, (112, 112, 32)), "block1_1_pw1": (pw, (112, 112, 16)),
        "block1_1_pw2": (pw_relu, (112, 112, 96)), "block1_1_dw2": (dw, (56, 56, 96)),
        # single-block stride-1 stage: full block, no shortcut; hidden 96 // 6 raised to 32
        "block2_1_dw1": (dw_relu, (56, 56, 96)), "block2_1_pw1": (pw, (56, 56, 32)),
        "block2_1_pw2": (pw_relu, (56, 56, 144)), "block2_1_dw2": (dw, (56, 56, 144)),
        # channel change at stride 2: pw-pw-dw
        "block3_1_pw1": (pw, (56, 56, 32)), "block3_1_pw2": (pw_relu, (56, 56, 192)),
        "block3_1_dw2": (dw, (28, 28, 192)),
        # repeated block: full block + shortcut
        "block3_2_dw1": (dw_relu, (28, 28, 192)), "block3_2_pw1": (pw, (28, 28, 32)),
        "block3_2_pw2": (pw_relu, (28, 28, 192)), "block3_2_dw2": (dw, (28, 28, 192)),
        "block3_2_shortcut": ("Add", (28, 28, 192)),
        # channel change at stride 1: pw-pw
        "block5_1_pw1": (pw, (14, 14, 64)), "block5_1_pw2": (pw_relu, (14, 14, 384)),
    }
    assert {name: rows.get(name) for name in expected} == expected
    for absent in ("block2_1_shortcut", "block3_1_dw1", "block5_1_dw1", "block5_1_dw2", "block8_1_shortcut"):
        assert absent not in rows


@pytest.mark.parametrize("overrides", [
    dict(width=0.5), dict(width=1.4, identity_multiplier=0.5), dict(width=0.1, resolution=96),
    dict(width=0.35, resolution=64, channels=1, classes=10),
    dict(width=0.35, resolution=64, channels=1, classes=10, scale_last_stage=True),
])
def test_mobilenext_counts_match_reference(overrides):
    config = model_config("mobilenext", **overrides)
    model = create_model("mobilenext", **overrides)
    counts = analyze(model)
    assert (counts["params"], counts["macs"]) == reference_mobilenext_counts(
        config["width"], config["resolution"], config["channels"], config["classes"], config["scale_last_stage"])
    assert counts["params"] == _trainable(model)


@pytest.mark.parametrize("width, resolution", [(1.0, 224), (0.35, 96), (1.4, 96)])
def test_mobilenetv2_matches_keras_applications(width, resolution):
    ours = create_model("mobilenetv2", width=width, resolution=resolution)
    theirs = keras.applications.MobileNetV2(input_shape=(resolution, resolution, 3), alpha=width, weights=None)
    assert _trainable(ours) == _trainable(theirs)
    assert analyze(ours)["macs"] == analyze(theirs)["macs"]
    if (width, resolution) == (1.0, 224):
        assert _trainable(ours) == 3_504_872


# --- summary.py ----------------------------------------------------------------------------------------------------

def _summary(*args):
    return subprocess.run([sys.executable, str(SUMMARY), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_summary_table_with_multiplier(capsys):
    summary.main(["--preset", "mobilenext-mcu", "--identity-multiplier", "0.5"])
    table = capsys.readouterr().out
    shortcut = next(line for line in table.splitlines() if line.startswith("block3_2_shortcut "))
    # 64 channels (192 * 0.35 rounded to 8) of 8x8 pixels: 32 added, 2*64*32 bytes read, 64*32 written.
    assert "PartialAdd" in shortcut and "adds 32/64 ch, reads 4096 B, writes 2048 B" in shortcut
    assert "MACs (conv + dense)" in table


def test_summary_runs_as_script():
    result = _summary("--preset", "mobilenetv2-mcu", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"]["arch"] == "mobilenetv2"


@pytest.mark.parametrize("args, message", [
    (["--width", "abc"], "--width"),
    (["--bogus"], "unrecognized arguments"),
    (["--arch", "mobilenext", "--preset", "mobilenext-mcu"], "not allowed with"),
    (["--width", "0"], "width must be > 0"),
    (["--arch", "mobilenetv2", "--identity-multiplier", "0.5"], "no option identity_multiplier"),
])
def test_summary_bad_input(args, message):
    result = _summary(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
