"""Builders of small int8 TFLite test models (one per operator, plus a few composite blocks).

Every model is built from a tf_keras model with fixed random weights, converted with
`tf.lite.TFLiteConverter` full-integer post-training quantization (int8 weights and activations,
int32 biases; int8 input/output unless `float_io=True`), see
https://ai.google.dev/edge/litert/models/post_training_integer_quant.

Interface (others import this; names are stable):
    MODELS                      name -> (keras builder, input shape HWC) for every test model
    build_tflite(name, out_dir, per_channel=True, float_io=False) -> Path  (cached on disk)
    random_int8_inputs(model_path, n, seed=0) -> np.ndarray  (N, *input shape), the input dtype
    model_names() -> list[str]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _keras():
    import tf_keras as keras

    return keras


def _tf():
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------------------------------------
# Keras builders: each returns an uncompiled tf_keras.Model for the given HWC input shape.
# ---------------------------------------------------------------------------------------------


def _conv(shape, act=None, strides=1, padding="same", kernel=3, filters=8):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation=act)(x)
    return keras.Model(x, y)


def _depthwise(shape, act=None, strides=1, padding="same", multiplier=1):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding=padding, depth_multiplier=multiplier, activation=act
    )(x)
    return keras.Model(x, y)


def _dense(shape, act=None):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Flatten()(x)
    y = keras.layers.Dense(10, activation=act)(y)
    return keras.Model(x, y)


def _binary(shape, layer):
    """Two conv branches (different output scales) joined by ADD / SUB / MUL."""
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    a = keras.layers.Conv2D(shape[-1], 1)(x)
    b = keras.layers.Conv2D(shape[-1], 3, padding="same")(x)
    return keras.Model(x, layer()([a, b]))


def _add_relu(shape):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    a = keras.layers.Conv2D(shape[-1], 1)(x)
    y = keras.layers.ReLU()(keras.layers.Add()([x, a]))
    return keras.Model(x, y)


def _mean(shape):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Conv2D(8, 1)(x)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, y)


def _pool(shape, layer, padding):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = layer(pool_size=3, strides=2, padding=padding)(x)
    return keras.Model(x, y)


def _concat(shape):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    a = keras.layers.Conv2D(4, 1)(x)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    return keras.Model(x, keras.layers.Concatenate()([a, b]))


def _softmax(shape, stddev=0.05):
    """stddev of the classifier weights: large values give logits spread wider than the
    fixed-point exp's input radius (exercises TFLite's diff_min cut-off)."""
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Flatten()(x)
    y = keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(stddev=stddev))(y)
    y = keras.layers.Softmax()(y)
    return keras.Model(x, y)


def _pad(shape):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.ZeroPadding2D(((1, 2), (0, 1)))(x)
    y = keras.layers.Conv2D(4, 3, strides=2)(y)
    return keras.Model(x, y)


def _reshape(shape):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Reshape((shape[0] * shape[1], shape[2]))(x)
    y = keras.layers.Dense(5)(y)
    return keras.Model(x, y)


def _strided_slice(shape):
    keras = _keras()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Conv2D(8, 1)(x)
    y = keras.layers.Lambda(lambda t: t[:, 1:, ::2, 2:7])(y)
    return keras.Model(x, y)


def _split(shape):
    keras = _keras()
    tf = _tf()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Conv2D(8, 1)(x)
    a, b = keras.layers.Lambda(lambda t: tf.split(t, 2, axis=-1))(y)
    a = keras.layers.Conv2D(4, 1)(a)
    return keras.Model(x, keras.layers.Concatenate()([a, b]))


def _identity_block(shape, multiplier=0.5):
    """MobileNeXt sandglass block with identity tensor multiplier (arXiv 2007.02269, Sec. 3.3):
    only the first `multiplier * C` channels take the shortcut add, the rest pass unchanged."""
    keras = _keras()
    c = shape[-1]
    k = max(1, int(round(c * multiplier)))
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation=_relu6())(x)
    y = keras.layers.Conv2D(c // 2, 1)(y)
    y = keras.layers.Conv2D(c, 1, activation=_relu6())(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(y)
    head = keras.layers.Add()(
        [keras.layers.Lambda(lambda t: t[..., :k])(x), keras.layers.Lambda(lambda t: t[..., :k])(y)]
    )
    tail = keras.layers.Lambda(lambda t: t[..., k:])(y)
    return keras.Model(x, keras.layers.Concatenate()([head, tail]))


def _small_cnn(shape):
    """A MobileNet-like CNN: stem conv, inverted-residual-ish blocks, pooling, classifier."""
    keras = _keras()
    relu6 = _relu6()
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation=relu6)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation=relu6)(y)
    y = keras.layers.Conv2D(8, 1)(y)
    r = keras.layers.Conv2D(16, 1, activation=relu6)(y)
    r = keras.layers.DepthwiseConv2D(3, padding="same", activation=relu6)(r)
    r = keras.layers.Conv2D(8, 1)(r)
    y = keras.layers.Add()([y, r])
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation=relu6)(y)
    y = keras.layers.Conv2D(16, 1, activation=relu6)(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(10)(y)
    y = keras.layers.Softmax()(y)
    return keras.Model(x, y)


def _relu6():
    return _tf().nn.relu6


# name -> (builder(shape) -> keras.Model, input shape HWC)
MODELS = {
    "conv": (lambda s: _conv(s), (8, 8, 3)),
    "conv_relu": (lambda s: _conv(s, act="relu", strides=2), (9, 9, 3)),
    "conv_relu6_valid": (lambda s: _conv(s, act=_relu6(), padding="valid"), (8, 8, 4)),
    "conv_1x1": (lambda s: _conv(s, kernel=1, filters=12), (6, 6, 8)),
    "depthwise": (lambda s: _depthwise(s), (8, 8, 6)),
    "depthwise_relu6_s2": (lambda s: _depthwise(s, act=_relu6(), strides=2), (9, 9, 6)),
    "depthwise_mult2": (lambda s: _depthwise(s, multiplier=2, padding="valid"), (7, 7, 3)),
    "dense": (lambda s: _dense(s), (4, 4, 3)),
    "dense_relu": (lambda s: _dense(s, act="relu"), (4, 4, 3)),
    "add": (lambda s: _binary(s, lambda: _keras().layers.Add()), (6, 6, 4)),
    "add_relu": (lambda s: _add_relu(s), (6, 6, 4)),
    "sub": (lambda s: _binary(s, lambda: _keras().layers.Subtract()), (6, 6, 4)),
    "mul": (lambda s: _binary(s, lambda: _keras().layers.Multiply()), (6, 6, 4)),
    "mean": (lambda s: _mean(s), (7, 7, 3)),
    "avg_pool_same": (lambda s: _pool(s, _keras().layers.AveragePooling2D, "same"), (8, 8, 4)),
    "avg_pool_valid": (lambda s: _pool(s, _keras().layers.AveragePooling2D, "valid"), (9, 9, 4)),
    "max_pool": (lambda s: _pool(s, _keras().layers.MaxPooling2D, "same"), (8, 8, 4)),
    "concat": (lambda s: _concat(s), (6, 6, 3)),
    "softmax": (lambda s: _softmax(s), (4, 4, 3)),
    "softmax_wide": (lambda s: _softmax(s, stddev=3.0), (4, 4, 3)),
    "pad": (lambda s: _pad(s), (7, 7, 3)),
    "reshape": (lambda s: _reshape(s), (4, 4, 3)),
    "strided_slice": (lambda s: _strided_slice(s), (6, 6, 3)),
    "split": (lambda s: _split(s), (6, 6, 3)),
    "identity_block": (lambda s: _identity_block(s), (8, 8, 8)),
    # 1x1 convs with 48 and 24 input channels: SDOT by lane (K % 16 == 0) and by 4 on rpi5
    "identity_block_48": (lambda s: _identity_block(s), (4, 4, 48)),
    "small_cnn": (lambda s: _small_cnn(s), (16, 16, 1)),
}


def model_names() -> list[str]:
    return list(MODELS)


def _representative(shape, n=64, seed=1):
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1.0, size=(n, 1, *shape)).astype(np.float32)

    def gen():
        for sample in data:
            yield [sample]

    return gen


def _keras_model(name: str):
    keras = _keras()
    builder, shape = MODELS[name]
    keras.utils.set_random_seed(_stable_seed(name))
    model = builder(shape)
    # Non-zero biases so that bias handling is exercised.
    rng = np.random.default_rng(_stable_seed(name))
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights(
                [w if w.ndim > 1 else rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in weights]
            )
    return model, shape


def _stable_seed(name: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 2**31


def build_tflite(name: str, out_dir, per_channel: bool = True, float_io: bool = False) -> Path:
    """Build (or reuse) the int8 TFLite model `name` in out_dir and return its path."""
    if name not in MODELS:
        raise KeyError(f"unknown test model {name!r}; known: {', '.join(MODELS)}")
    tag = ("" if per_channel else "_pt") + ("_fio" if float_io else "")
    path = Path(out_dir) / f"{name}{tag}.tflite"
    if path.exists():
        return path
    tf = _tf()
    model, shape = _keras_model(name)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(shape)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if not per_channel:
        converter._experimental_disable_per_channel = True
    data = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def random_int8_inputs(model_path, n: int, seed: int = 0) -> np.ndarray:
    """N random inputs for the model: uniform int8 for int8 inputs, N(0,1) float32 otherwise."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(model_path)).get_input_details()[0]
    shape = tuple(detail["shape"][1:])
    rng = np.random.default_rng(seed)
    if detail["dtype"] == np.int8:
        return rng.integers(-128, 128, size=(n, *shape), dtype=np.int8)
    return rng.normal(0.0, 1.0, size=(n, *shape)).astype(detail["dtype"])
