"""A spec (``compile.difftest.spec``) -> a tf_keras model -> an int8 ``.tflite``.

The model goes through TensorFlow's own converter with full-integer post-training
quantization (int8 weights and activations, int32 biases, per-channel or per-tensor
weights, int8 or float32 input/output), the way users make their models
(https://ai.google.dev/edge/litert/models/post_training_integer_quant).  Weights and biases
are drawn from the spec's seed; the calibration data too.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from compile.difftest.spec import shapes  # noqa: E402

CALIBRATION_SAMPLES = 32


def keras_model(spec: dict):
    """The uncompiled tf_keras model of ``spec`` (weights from its seed)."""
    import tensorflow as tf
    import tf_keras as keras

    shapes(spec)                                  # InvalidSpec before Keras sees it
    keras.utils.set_random_seed(spec["seed"])
    L = keras.layers
    x = keras.Input(spec["input"], batch_size=1)
    nodes = [x]

    def act(name):
        return {"none": None, "relu": "relu", "relu6": tf.nn.relu6}[name]

    for layer in spec["layers"]:
        op, ins = layer["op"], [nodes[j] for j in layer["in"]]
        a = ins[0]
        if op == "conv":
            y = L.Conv2D(layer["filters"], layer["kernel"], strides=layer["strides"],
                         padding=layer["padding"], dilation_rate=layer["dilation"],
                         activation=act(layer["act"]))(a)
        elif op == "depthwise":
            y = L.DepthwiseConv2D(layer["kernel"], strides=layer["strides"],
                                  padding=layer["padding"], dilation_rate=layer["dilation"],
                                  depth_multiplier=layer["multiplier"],
                                  activation=act(layer["act"]))(a)
        elif op in ("avg_pool", "max_pool"):
            cls = L.AveragePooling2D if op == "avg_pool" else L.MaxPooling2D
            y = cls(layer["pool"], strides=layer["strides"], padding=layer["padding"])(a)
        elif op in ("add", "sub", "mul"):
            y = {"add": L.Add, "sub": L.Subtract, "mul": L.Multiply}[op]()(ins)
            if layer.get("act", "none") != "none":
                y = L.Activation(act(layer["act"]))(y)
        elif op == "concat":
            y = L.Concatenate()(ins)
        elif op == "pad":
            y = L.ZeroPadding2D([tuple(p) for p in layer["pads"]])(a)
        elif op == "slice":
            (h0, w0, c0), (sh, sw, sc) = layer["begin"], layer["step"]
            y = L.Lambda(lambda t, h0=h0, w0=w0, c0=c0, sh=sh, sw=sw, sc=sc:
                         t[:, h0::sh, w0::sw, c0::sc])(a)
        elif op == "split":
            parts, take = layer["parts"], layer["take"]
            y = L.Lambda(lambda t, p=parts, k=take: tf.split(t, p, axis=-1)[k])(a)
        elif op == "reshape":
            h, w, c = a.shape[1:]
            y = L.Reshape((w, h, c))(a)
        elif op == "mean":
            y = L.GlobalAveragePooling2D(keepdims=layer["keepdims"])(a)
        elif op == "dense":
            y = L.Dense(layer["units"], activation=act(layer["act"]))(
                L.Flatten()(a) if len(a.shape) > 2 else a)
        elif op == "softmax":
            y = L.Softmax()(a)
        else:
            raise ValueError(f"unknown op {op!r}")
        nodes.append(y)
    model = keras.Model(x, nodes[-1])
    rng = np.random.default_rng(spec["seed"])
    for layer in model.layers:      # non-zero biases, so that bias handling is exercised
        weights = layer.get_weights()
        if weights:
            layer.set_weights([w if w.ndim > 1 else rng.normal(0, 0.3, w.shape).astype(w.dtype)
                               for w in weights])
    return model


def to_tflite(spec: dict, path: Path) -> Path:
    """Convert ``spec`` and write it to ``path`` (whole or not at all)."""
    import tensorflow as tf

    model = keras_model(spec)
    rng = np.random.default_rng(spec["seed"] + 1)
    data = rng.normal(0.0, 1.0, size=(CALIBRATION_SAMPLES, 1, *spec["input"])).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample] for sample in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not spec["float_io"]:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if not spec["per_channel"]:
        converter._experimental_disable_per_channel = True
    flat = converter.convert()
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(flat)
    os.replace(tmp, path)
    return path
