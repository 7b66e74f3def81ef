"""Tests of the TFLite front end (compile/frontend.py), the pipeline and the bundle format.

Models come from tests/factory.py (int8 post-training quantized with TF's converter); damaged
files are made by truncating/patching those bytes, the unsupported-op model with TF itself.
"""
import errno
import json
import threading
import os
from pathlib import Path

import numpy as np
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter

from compile.bundle import FORMAT_VERSION, create_bundle, read_manifest
from compile.errors import BundleError, ModelError
from compile.frontend import SUPPORTED_OPS, check_supported, load_model, read_model
from compile.pipeline import compile_model
from compile.targets import get_target
from tests.factory import build_tflite


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "factory_models"   # shared on-disk cache
    return {name: build_tflite(name, out) for name in ("small_cnn", "conv_relu", "split")}


def tanh_model(out_dir: Path) -> Path:
    """An int8 model with TANH, which is outside SUPPORTED_OPS."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(3)
    x = keras.Input((6, 6, 2))
    y = keras.layers.Activation("tanh")(keras.layers.Conv2D(4, 3)(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.normal(size=(1, 6, 6, 2)).astype(np.float32)]
                                           for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = out_dir / "tanh.tflite"
    path.write_bytes(conv.convert())
    return path


def patched(src: Path, dst: Path, patch) -> Path:
    """Copy of a model with ``patch(model, buf)`` applied to its bytes in place."""
    buf = bytearray(src.read_bytes())
    patch(tflite.Model.GetRootAsModel(buf, 0), buf)
    dst.write_bytes(bytes(buf))
    return dst


def _set_int32_field(table, vtable_offset: int, value: int, buf: bytearray) -> None:
    o = table._tab.Offset(vtable_offset)
    assert o, "field not stored in the file (default value)"
    buf[table._tab.Pos + o:table._tab.Pos + o + 4] = int(value).to_bytes(4, "little", signed=True)


def test_model_info_matches_litert(models):
    _, info = load_model(models["small_cnn"])
    detail = Interpreter(model_path=str(models["small_cnn"])).get_input_details()[0]
    out = Interpreter(model_path=str(models["small_cnn"])).get_output_details()[0]
    assert info.input.shape == tuple(detail["shape"]) == (1, 16, 16, 1)
    assert info.input.dtype == "int8" and info.output.dtype == "int8"
    assert info.input.scale == pytest.approx(detail["quantization"][0])
    assert info.input.zero_point == detail["quantization"][1]
    assert info.output.shape == tuple(out["shape"]) == (1, 10)
    assert info.output.zero_point == out["quantization"][1]
    names = dict(info.operators)
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"):
        assert 1 <= names[op] <= SUPPORTED_OPS[op]
    assert len(info.sha256) == 64 and Path(info.path).is_absolute()


def test_every_truncation_is_reported(models, tmp_path):
    data = models["small_cnn"].read_bytes()
    cut = tmp_path / "cut.tflite"
    for n in list(range(0, 64)) + list(range(64, len(data), 97)) + [len(data) - 1]:
        cut.write_bytes(data[:n])
        with pytest.raises(ModelError, match="truncated or corrupt|not a TFLite model"):
            load_model(cut)


def test_not_tflite(tmp_path):
    path = tmp_path / "x.tflite"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(ModelError, match="not a TFLite model"):
        load_model(path)


def test_unsupported_op_is_named_with_its_version(tmp_path):
    with pytest.raises(ModelError, match=r"unsupported operator TANH \(version \d+\)"):
        read_model(tanh_model(tmp_path))


def test_unsupported_version(models, tmp_path):
    def bump(model, buf):
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            if oc.BuiltinCode() == tflite.BuiltinOperator.CONV_2D:
                _set_int32_field(oc, 8, 7, buf)   # OperatorCode.version
    path = patched(models["small_cnn"], tmp_path / "v7.tflite", bump)
    model, info = load_model(path)
    assert ("CONV_2D", 7) in info.operators
    with pytest.raises(ModelError, match=r"unsupported version 7 of operator CONV_2D"):
        check_supported(model, info)


def test_unsupported_fused_activation(models, tmp_path):
    def tanh(model, buf):
        sg = model.Subgraphs(0)
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            if op.BuiltinOptionsType() == tflite.BuiltinOptions.Conv2DOptions:
                table = op.BuiltinOptions()
                opts = tflite.Conv2DOptions()
                opts.Init(table.Bytes, table.Pos)
                o = opts._tab.Offset(10)   # Conv2DOptions.fused_activation_function (int8)
                assert o
                buf[opts._tab.Pos + o] = tflite.ActivationFunctionType.TANH
    path = patched(models["conv_relu"], tmp_path / "act.tflite", tanh)
    with pytest.raises(ModelError, match="unsupported fused activation TANH on operator CONV_2D"):
        read_model(path)


def test_pipeline_main_takes_one_sample(models):
    from tvm import relax

    mod, info = compile_model(models["small_cnn"])
    (param,) = mod["main"].params
    assert [int(d) for d in param.ty.shape] == [1, 16, 16, 1]
    assert param.ty.dtype == "int8"
    assert "params" not in mod["main"].attrs        # weights are constants, no copy
    assert isinstance(mod["main"].body, relax.SeqExpr)


def test_pipeline_imports_int8_data_movement(models):
    """SPLIT on int8 tensors: refused by TVM's own converter, allowed with compile.lower's."""
    mod, info = compile_model(models["split"])
    assert dict(info.operators)["SPLIT"] <= SUPPORTED_OPS["SPLIT"]
    assert mod["main"].ret_ty.dtype == "int8"


def _free_pid() -> int:
    """A PID no process has now."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def _one_file(content: str):
    """A backend that writes one file holding ``content``."""
    def write(tmp):
        (tmp / "f.bin").write_text(content)
        return {"files": ["f.bin"]}
    return write


def test_full_disk_leaves_the_old_bundle_and_one_error(models, tmp_path):
    _, info = load_model(models["small_cnn"])
    target, out = get_target("host"), tmp_path / "b"

    def full(tmp):
        (tmp / "half.bin").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    create_bundle(out, target, info, {}, "first", _one_file("first"))
    with pytest.raises(BundleError, match="no space left on the device while writing the "
                                          "bundle .*; nothing was written there"):
        create_bundle(out, target, info, {}, "second", full)
    assert sorted(os.listdir(tmp_path)) == ["b"] and read_manifest(out)["command"] == "first"


def test_racing_builds_leave_one_complete_bundle(models, tmp_path):
    """A build whose target directory is published by another build while it runs (here:
    from inside its backend, so the interleaving is certain), and four threads publishing
    to one directory 15 times each: every build succeeds, and the directory ends as one
    complete bundle, all of its files from the same build (the last to publish)."""
    _, info = load_model(models["small_cnn"])
    target, out = get_target("host"), tmp_path / "b"
    build = _one_file

    def raced(tmp):
        create_bundle(out, target, info, {}, "other", build("other"))
        return build("mine")(tmp)

    create_bundle(out, target, info, {}, "mine", raced)
    assert read_manifest(out)["command"] == "mine" and os.listdir(tmp_path) == ["b"]

    errors = []

    def worker(i):
        try:
            for k in range(15):
                create_bundle(out, target, info, {}, f"w{i}-{k}", build(f"w{i}-{k}"))
        except Exception as err:   # noqa: BLE001  (reported below)
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert os.listdir(tmp_path) == ["b"] and sorted(os.listdir(out)) == ["bundle.json", "f.bin"]
    assert (out / "f.bin").read_text() == read_manifest(out)["command"]


def test_temp_dirs_of_killed_builds_are_removed(models, tmp_path):
    _, info = load_model(models["small_cnn"])
    target = get_target("host")
    dead, alive = _free_pid(), os.getpid()
    for name in (f"b.tmp-{dead}-x1", f"b.old-{dead}-x2", f"b.tmp-{alive}-x3", "b.tmp-notes"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.bin").write_bytes(b"x")
    create_bundle(tmp_path / "b", target, info, {}, "cmd", lambda tmp: {"files": []})
    assert sorted(os.listdir(tmp_path)) == ["b", f"b.tmp-{alive}-x3", "b.tmp-notes"]


def test_bundle_is_published_atomically(models, tmp_path):
    _, info = load_model(models["small_cnn"])
    target = get_target("host")
    out = tmp_path / "b"

    def failing(tmp):
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("backend crashed")

    with pytest.raises(RuntimeError):
        create_bundle(out, target, info, {}, "cmd", failing)
    assert os.listdir(tmp_path) == []                # no bundle, no temp dir left

    def ok(tmp):
        (tmp / "f.bin").write_bytes(b"1")
        return {"files": ["f.bin"], "extra": 1}

    manifest = create_bundle(out, target, info, {}, "cmd", ok)
    assert read_manifest(out, target) == manifest == json.loads((out / "bundle.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["extra"] == 1
    create_bundle(out, target, info, {}, "cmd2", ok)   # an old bundle is replaced
    assert read_manifest(out)["command"] == "cmd2" and sorted(os.listdir(tmp_path)) == ["b"]
    with pytest.raises(BundleError, match="built for target 'host', not 'rpi4'"):
        read_manifest(out, get_target("rpi4"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a bundle; refusing"):
        create_bundle(tmp_path / "other", target, info, {}, "cmd", ok)
    assert os.listdir(tmp_path / "other") == ["keep.txt"]
