"""Building blocks shared by the MobileNeXt and MobileNetV2 Keras models.

* ``make_divisible`` -- the channel rounding rule of TF-slim's MobileNet, used by both papers.
* ``IdentityMultiplierAdd`` -- MobileNeXt's *identity tensor multiplier* shortcut
  (Zhou et al., "Rethinking Bottleneck Structure for Efficient Mobile Network Design", ECCV 2020,
  https://arxiv.org/abs/2007.02269, section 3.3): only the first ``floor(C * m)`` channels of the block
  input are added to the block output.
* ``conv_bn`` / ``depthwise_bn`` -- convolution (no bias) + BatchNorm + optional ReLU6, the unit every block
  is made of (the Conv -> BN -> ReLU6 pattern is what tfmot folds for QAT).
"""

import math

import tf_keras as keras
import tensorflow as tf


def make_divisible(value, divisor, min_value=None):
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``),
    never going down by more than 10 %. Same rule as TF-slim ``mobilenet._make_divisible``."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def channels_added(channels, multiplier):
    """Number of leading channels that an identity multiplier ``multiplier`` adds: ``floor(channels * m)``.
    (Rounded to 9 decimals first so that e.g. 48 * 0.35 does not lose a channel to float error.)"""
    return math.floor(round(channels * multiplier, 9))


@keras.utils.register_keras_serializable(package="sandglass")
class IdentityMultiplierAdd(keras.layers.Layer):
    """Partial residual add of MobileNeXt: ``layer([block_input, block_output])``.

    With ``k = floor(C * multiplier)`` the output is ``concat(input[..., :k] + output[..., :k],
    output[..., k:])``: the first ``k`` channels get the shortcut, the other channels of the block output
    pass unchanged. ``multiplier == 1`` is a plain add. Built from strided-slice, add and concatenation, which
    the TFLite converter maps to builtin int8 ops.
    """

    def __init__(self, multiplier=1.0, **kwargs):
        super().__init__(**kwargs)
        multiplier = float(multiplier)
        if not 0.0 < multiplier <= 1.0:
            raise ValueError(f"identity multiplier must be in (0, 1], got {multiplier}")
        self.multiplier = multiplier

    def channels_added(self, channels):
        """How many leading channels of a ``channels``-channel block get the shortcut add."""
        return channels_added(channels, self.multiplier)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: expects [block_input, block_output], got {len(input_shape)} inputs")
        a, b = (tuple(s) for s in input_shape)
        if a != b:
            raise ValueError(f"{self.name}: block input {a} and block output {b} must have the same shape")
        super().build(input_shape)

    def call(self, inputs):
        block_input, block_output = inputs
        channels = block_output.shape[-1]
        k = self.channels_added(channels)
        if k == channels:
            return block_input + block_output
        if k == 0:
            return tf.identity(block_output)
        added = block_input[..., :k] + block_output[..., :k]
        return tf.concat([added, block_output[..., k:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier}


def _he_fan_out(kernel_size, out_channels):
    """Weight init of the MobileNeXt reference code: N(0, sqrt(2 / (k*k*out_channels)))."""
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / (kernel_size * kernel_size * out_channels)))


def conv_bn(x, filters, kernel_size, stride, name, relu6, init="keras"):
    """Conv2D (no bias, 'same' padding) -> BatchNorm -> optional ReLU6. Layers: name, name_bn, name_relu.
    ``init='fan_out'`` uses the MobileNeXt reference initialisation, ``'keras'`` the Keras default."""
    initializer = _he_fan_out(kernel_size, filters) if init == "fan_out" else "glorot_uniform"
    x = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding="same", use_bias=False,
                            kernel_initializer=initializer, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu6:
        x = keras.layers.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def depthwise_bn(x, stride, name, relu6, init="keras"):
    """3x3 DepthwiseConv2D (no bias, 'same' padding) -> BatchNorm -> optional ReLU6."""
    initializer = _he_fan_out(3, x.shape[-1]) if init == "fan_out" else "glorot_uniform"
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                     depthwise_initializer=initializer, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu6:
        x = keras.layers.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def classifier_head(x, classes, dropout, activation=None, init="keras"):
    """Global average pool -> dropout -> dense classifier (layers: pool, dropout, logits/predictions)."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    initializer = keras.initializers.RandomNormal(stddev=0.01) if init == "fan_out" else "glorot_uniform"
    return keras.layers.Dense(classes, activation=activation, kernel_initializer=initializer,
                              name="logits" if activation is None else "predictions")(x)
