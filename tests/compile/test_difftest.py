"""Differential testing (compile/difftest): generated models bit-exact with LiteRT's reference
kernels on every target, and every shrunk failure kept as a regression case.

The seeded batch and the regression cases compile and run real models for host, rpi4
(qemu-aarch64) and the three QEMU Cortex-M boards; the long run is
``python -m compile.difftest --n 500`` (README).
"""
import json
import os
import subprocess
import sys

import pytest

from compile.difftest import campaign, spec as specs
from compile.difftest.check import ALL_TARGETS
from compile.paths import REPO

CASES = sorted((REPO / "tests" / "difftest_cases").glob("*.json"))
SEEDED_BATCH = range(24)        # models of make test's batch (seeds 0..23)


def _conv(src, **kw):
    return {"op": "conv", "in": [src], "filters": 4, "kernel": [3, 3], "strides": [1, 1],
            "padding": "same", "dilation": 1, "act": "none", **kw}


def _spec(layers, shape=(6, 6, 4)):
    return {"input": list(shape), "float_io": False, "per_channel": True, "seed": 3,
            "layers": layers}


# -- the generator -------------------------------------------------------------------------
def test_random_specs_are_valid_deterministic_and_cover_the_operators():
    drawn = [specs.random_spec(seed) for seed in range(300)]
    assert drawn == [specs.random_spec(seed) for seed in range(300)]
    layers = [layer for s in drawn for layer in s["layers"]]
    for s in drawn:
        specs.shapes(s)                                  # valid
    assert {layer["op"] for layer in layers} == set(specs.WEIGHTS) | {"softmax"}
    assert {layer.get("padding") for layer in layers} >= {"same", "valid"}
    assert {layer.get("act") for layer in layers} >= set(specs.ACTS)
    assert any(layer.get("strides") == [2, 2] for layer in layers)
    assert any(layer.get("dilation") == 2 for layer in layers)
    assert any(layer.get("multiplier") == 2 for layer in layers)
    assert any(layer.get("kernel", [0, 0])[0] != layer.get("kernel", [0, 0])[1]
               for layer in layers)
    assert any(s["float_io"] for s in drawn) and any(not s["per_channel"] for s in drawn)
    assert any(s["input"][0] != s["input"][1] for s in drawn)             # not square
    assert any(s["input"][2] in (1, 3, 5) for s in drawn)                 # odd channels
    assert any(len(s["layers"]) == 1 for s in drawn)                      # one operator
    assert any(layer["in"] != [i] for s in drawn for i, layer in enumerate(s["layers"]))


def test_shapes_agree_with_keras():
    from compile.difftest.convert import keras_model

    for seed in range(8):
        s = specs.random_spec(seed)
        assert list(keras_model(s).output_shape[1:]) == specs.shapes(s)[-1], s


def test_invalid_specs_are_refused():
    with pytest.raises(specs.InvalidSpec):
        specs.shapes(_spec([_conv(0, kernel=[5, 5], padding="valid")], (3, 3, 1)))
    with pytest.raises(specs.InvalidSpec):                 # shapes of an add differ
        specs.shapes(_spec([_conv(0, filters=2), {"op": "add", "in": [0, 1], "act": "none"}]))
    with pytest.raises(specs.InvalidSpec):                 # dilation with strides
        specs.shapes(_spec([_conv(0, dilation=2, strides=[2, 2])]))


# -- shrinking -----------------------------------------------------------------------------
def test_used_prefix_keeps_what_the_node_needs():
    before = _spec([_conv(0), _conv(0, act="relu"), {"op": "add", "in": [1, 2], "act": "none"},
                    _conv(3)])
    expected = _spec([_conv(0), _conv(0, act="relu"), {"op": "add", "in": [1, 2],
                                                       "act": "none"}])
    assert specs.used_prefix(before, 3) == expected
    assert specs.used_prefix(before, 2) == _spec([_conv(0, act="relu")])


def test_without_layer_rewires_its_readers():
    before = _spec([_conv(0), _conv(1, act="relu"), _conv(2, filters=2)])
    assert specs.without_layer(before, 1) == _spec([_conv(0), _conv(1, filters=2)])
    assert specs.without_layer(_spec([_conv(0)]), 0) is None


def test_shrink_reaches_the_smallest_model_that_still_fails():
    """A failure that needs a dilated depthwise conv: shrinking keeps just that layer, on a
    smaller input, with every other parameter simplified."""
    big = _spec([_conv(0, filters=8, act="relu"),
                 {"op": "depthwise", "in": [1], "kernel": [3, 3], "strides": [1, 1],
                  "padding": "valid", "dilation": 2, "act": "relu6", "multiplier": 2},
                 _conv(2, filters=16, kernel=[1, 1]), _conv(2, filters=16, act="relu"),
                 {"op": "add", "in": [3, 4], "act": "relu"}], shape=(9, 10, 5))
    specs.shapes(big)

    def fails(s):
        return any(layer["op"] == "depthwise" and layer.get("dilation") == 2
                   for layer in s["layers"])

    small = campaign.shrink(big, fails, budget=500)
    assert fails(small) and specs.cost(small) < specs.cost(big)
    assert [layer["op"] for layer in small["layers"]] == ["depthwise"]
    layer = small["layers"][0]
    assert layer["act"] == "none" and layer["multiplier"] == 1
    assert small["input"][2] == 1


# -- every target, bit for bit -------------------------------------------------------------
def _assert_all_exact(results):
    bad = [(r.seed, specs.describe(r.spec), o.target, o.status, o.detail)
           for r in results for o in r.failures]
    skipped = [(r.seed, r.skipped) for r in results if r.skipped]
    assert not bad and not skipped, bad or skipped
    assert all(len(r.outcomes) == len(ALL_TARGETS) for r in results)


@pytest.mark.slow
def test_regression_cases_are_bit_exact_on_every_target():
    """Every kept failure (shrunk by ``python -m compile.difftest --save-regressions``, or the
    models of bug reports) on all five targets."""
    cases = [json.loads(path.read_text()) for path in CASES]
    assert cases
    _assert_all_exact(campaign.check_specs([c["spec"] for c in cases], ALL_TARGETS))


@pytest.mark.slow
def test_seeded_batch_is_bit_exact_on_every_target():
    _assert_all_exact(campaign.run_campaign(SEEDED_BATCH, ALL_TARGETS))


# -- the command ---------------------------------------------------------------------------
def _difftest(*args, timeout=600):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "compile.difftest", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


@pytest.mark.parametrize("args, words", [
    (["--targets", "nope"], ["nope"]),
    (["--n", "0"], ["--n"]),
    (["--jobs", "0"], ["--jobs"]),
])
def test_bad_arguments_are_one_error_line(args, words, tmp_path):
    result = _difftest(*args, "--out", tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert all(w in lines[0] for w in words)


@pytest.mark.slow
def test_command_writes_results(tmp_path):
    result = _difftest("--n", 2, "--seed", 40, "--targets", "host,mps2-an386", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["checked"] == 2 and report["mismatches"] == 0 and report["runs"] == 4
    assert [m["seed"] for m in report["models"]] == [40, 41]
    assert "0 mismatches, 0 build failures" in result.stdout
