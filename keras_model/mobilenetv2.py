"""MobileNetV2 baseline in Keras 2, the same network as ``keras.applications.MobileNetV2`` (3,504,872 trainable
parameters at width 1.0, 224x224x3, 1000 classes) with the knobs of our MobileNeXt builder.

Paper: Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018, https://arxiv.org/abs/1801.04381.

Differences from ``keras.applications``, without effect on shapes or counts: 'same' padding instead of explicit
zero padding before stride-2 depthwise convs, Keras BatchNorm defaults, optional dropout before the classifier,
logits output by default.
"""

import tf_keras as keras

from keras_model.layers import classifier_head, conv_bn, depthwise_bn, make_divisible
from keras_model.registry import register_model

# Inverted residual stages of the paper (table 2): expansion t, output channels c at width 1.0,
# number of blocks n, stride s of the first block.
STAGES = [
    # t,   c, n, s
    (1,  16, 1, 1),
    (6,  24, 2, 2),
    (6,  32, 3, 2),
    (6,  64, 4, 2),
    (6,  96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHANNELS = 32
LAST_CONV_CHANNELS = 1280


def last_conv_channels(width, scale_last_stage=False):
    """The final 1x1 conv keeps 1280 channels up to width 1.0 (as keras.applications), unless scaled."""
    if width > 1.0 or scale_last_stage:
        return make_divisible(LAST_CONV_CHANNELS * width, 8)
    return LAST_CONV_CHANNELS


def inverted_residual(x, t, oup, stride, name):
    """Expand 1x1 (when t > 1) -> depthwise 3x3 -> linear project 1x1, plus an add when shapes allow."""
    inp = x.shape[-1]
    block_input = x
    if t != 1:
        x = conv_bn(x, inp * t, 1, 1, f"{name}_expand", relu6=True)
    x = depthwise_bn(x, stride, f"{name}_dw", relu6=True)
    x = conv_bn(x, oup, 1, 1, f"{name}_project", relu6=False)
    if stride == 1 and inp == oup:
        x = keras.layers.Add(name=f"{name}_shortcut")([block_input, x])
    return x


@register_model("mobilenetv2")
def mobilenetv2(width=1.0, resolution=224, channels=3, classes=1000, scale_last_stage=False, dropout=0.2,
                classifier_activation=None, name="mobilenetv2"):
    """Build MobileNetV2. Input: float images ``(resolution, resolution, channels)`` (pixels / 255); output:
    ``classes`` logits. Layer names: ``stem``, ``block{stage}_{i}_*``, ``head``, ``pool``, ``dropout``,
    ``logits``."""
    inputs = keras.Input((resolution, resolution, channels), name="image")
    x = conv_bn(inputs, make_divisible(STEM_CHANNELS * width, 8), 3, 2, "stem", relu6=True)
    for stage, (t, c, n, s) in enumerate(STAGES, start=1):
        oup = make_divisible(int(c * width), 8)
        for i in range(n):
            x = inverted_residual(x, t, oup, s if i == 0 else 1, name=f"block{stage}_{i + 1}")
    x = conv_bn(x, last_conv_channels(width, scale_last_stage), 1, 1, "head", relu6=True)
    outputs = classifier_head(x, classes, dropout, classifier_activation)
    return keras.Model(inputs, outputs, name=name)
