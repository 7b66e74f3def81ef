"""MobileNeXt (sandglass blocks + identity tensor multiplier) in Keras 2.

Paper: Zhou, Hou, Chen, Feng, Yan, "Rethinking Bottleneck Structure for Efficient Mobile Network Design",
ECCV 2020, https://arxiv.org/abs/2007.02269.
Follows the authors' reference PyTorch code (github.com/zhoudaquan/rethinking_bottleneck_design,
``mobilenext/codebase/models/mnext.py``, the model that reached 74.02 % top-1), layer for layer: at width 1.0,
224x224x3, 1000 classes it has 3,535,416 trainable parameters and 311.3 M multiply-accumulates.

Differences from the reference, all without effect on shapes or counts: 'same' padding (TF pads stride-2
convolutions bottom/right only), Keras BatchNorm epsilon/momentum defaults, and an identity multiplier given
as a fraction ``m`` (the reference's ``identity_div`` is ``1/m``).
"""

import math

import tf_keras as keras

from keras_model.layers import IdentityMultiplierAdd, classifier_head, conv_bn, depthwise_bn, make_divisible
from keras_model.registry import register_model

# Sandglass stages of the reference ``MXNet.cfgs``: expansion (reduction) ratio t, output channels c at
# width 1.0, number of blocks n, stride s of the first block.
STAGES = [
    # t,    c, n, s
    (2,   96, 1, 2),
    (6,  144, 1, 1),
    (6,  192, 3, 2),
    (6,  288, 3, 2),
    (6,  384, 4, 1),
    (6,  576, 4, 2),
    (6,  960, 3, 1),
    (6, 1280, 1, 1),
]
STEM_CHANNELS = 32
LAST_STAGE_CHANNELS = 1280


def stage_channels(width, scale_last_stage=False):
    """Stem channels and the output channels of every stage, as the reference computes them: rounded to a
    multiple of 8 (4 at width 0.1); the 1280 stage stays 1280 below width 1 unless ``scale_last_stage``."""
    divisor = 4 if width == 0.1 else 8
    stem = make_divisible(STEM_CHANNELS * width, divisor)
    outs = []
    for _, c, _, _ in STAGES:
        out = make_divisible(c * width, divisor)
        if c == LAST_STAGE_CHANNELS and width < 1 and not scale_last_stage:
            out = LAST_STAGE_CHANNELS
        outs.append(out)
    return stem, outs


def hidden_channels(inp, oup, t):
    """Channels of the sandglass bottleneck (between the two pointwise convs): ``inp // t``, raised to
    ``make_divisible(ceil(oup / 6), 16)`` when below ``oup / 6``."""
    hidden = inp // t
    if hidden < oup / 6.0:
        hidden = make_divisible(math.ceil(oup / 6.0), 16)
    return hidden


def block_variant(inp, oup, stride, t, keep_3x3):
    """Which layers a sandglass block has (the branches of the reference ``SGBlock``):

    ``"dw-pw-pw-dw"``           t == 2 (first stage): full block, stride on the last depthwise, no shortcut;
    ``"pw-pw"``                 channel change at stride 1;
    ``"pw-pw-dw"``              channel change at stride 2, stride on the depthwise;
    ``"dw-pw-pw-dw+shortcut"``  same channels (a repeated block): full block with the shortcut;
    ``"dw-pw-pw-dw"``           the single-block stride-1 stages (``keep_3x3``), no shortcut.
    The last two run at stride 1, as in the reference.
    """
    if t == 2:
        return "dw-pw-pw-dw"
    if inp != oup and not keep_3x3:
        return "pw-pw" if stride == 1 else "pw-pw-dw"
    return "dw-pw-pw-dw" if keep_3x3 else "dw-pw-pw-dw+shortcut"


def sandglass_block(x, oup, stride, t, keep_3x3, identity_multiplier, name):
    """One sandglass block; layers are named ``{name}_dw1``, ``_pw1``, ``_pw2``, ``_dw2``, ``_shortcut``."""
    inp = x.shape[-1]
    hidden = hidden_channels(inp, oup, t)
    variant = block_variant(inp, oup, stride, t, keep_3x3)
    block_input = x
    if variant.startswith("dw"):
        x = depthwise_bn(x, 1, f"{name}_dw1", relu6=True, init="fan_out")
    x = conv_bn(x, hidden, 1, 1, f"{name}_pw1", relu6=False, init="fan_out")
    x = conv_bn(x, oup, 1, 1, f"{name}_pw2", relu6=True, init="fan_out")
    if variant.startswith("dw"):
        last_stride = stride if t == 2 else 1
        x = depthwise_bn(x, last_stride, f"{name}_dw2", relu6=False, init="fan_out")
    elif variant == "pw-pw-dw":
        x = depthwise_bn(x, stride, f"{name}_dw2", relu6=False, init="fan_out")
    if variant.endswith("+shortcut"):
        x = IdentityMultiplierAdd(identity_multiplier, name=f"{name}_shortcut")([block_input, x])
    return x


@register_model("mobilenext")
def mobilenext(width=1.0, resolution=224, channels=3, classes=1000, identity_multiplier=1.0,
               scale_last_stage=False, dropout=0.2, classifier_activation=None, name="mobilenext"):
    """Build MobileNeXt. Input: float images ``(resolution, resolution, channels)`` (pixels / 255);
    output: ``classes`` logits (or ``classifier_activation`` applied). Layer names: ``stem``,
    ``block{stage}_{i}_*`` (stage and block counted from 1), ``pool``, ``dropout``, ``logits``."""
    stem, outs = stage_channels(width, scale_last_stage)
    inputs = keras.Input((resolution, resolution, channels), name="image")
    x = conv_bn(inputs, stem, 3, 2, "stem", relu6=True, init="fan_out")
    for stage, ((t, _, n, s), oup) in enumerate(zip(STAGES, outs), start=1):
        for i in range(n):
            first = i == 0
            x = sandglass_block(x, oup, s if first else 1, t, keep_3x3=first and n == 1 and s == 1,
                                identity_multiplier=identity_multiplier, name=f"block{stage}_{i + 1}")
    outputs = classifier_head(x, classes, dropout, classifier_activation, init="fan_out")
    return keras.Model(inputs, outputs, name=name)
