"""Quantization-aware training (QAT) with tensorflow-model-optimization's default 8-bit scheme.

Guide: https://www.tensorflow.org/model_optimization/guide/quantization/training_comprehensive_guide
(section "Quantize custom Keras layer"). The whole network goes through ``quantize_apply``; tfmot knows every
builtin layer of our models (Conv2D/DepthwiseConv2D + BatchNorm + ReLU6 patterns, Add, pooling, Dense) and the
one custom layer, MobileNeXt's ``IdentityMultiplierAdd``, gets :class:`IdentityMultiplierAddQuantizeConfig`:
no weights, and one fake-quant on its output, like tfmot does for ``keras.layers.Add`` -- the partial add is an
element-wise add followed by a concatenation, which TFLite runs on int8 tensors.
"""

import tf_keras as keras
import tensorflow_model_optimization as tfmot

from keras_model.layers import IdentityMultiplierAdd

_quant = tfmot.quantization.keras


class IdentityMultiplierAddQuantizeConfig(_quant.QuantizeConfig):
    """QuantizeConfig of IdentityMultiplierAdd: 8-bit asymmetric per-tensor moving-average output quantizer
    (the same quantizer tfmot's default scheme puts on ``Add`` and ``Concatenate``)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_quant.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                         narrow_range=False)]

    def get_config(self):
        return {}


# Objects a QAT model needs to be built, saved or loaded (use with ``quantize_scope``).
CUSTOM_OBJECTS = {
    "IdentityMultiplierAdd": IdentityMultiplierAdd,
    "IdentityMultiplierAddQuantizeConfig": IdentityMultiplierAddQuantizeConfig,
}


def _annotate(layer):
    if isinstance(layer, IdentityMultiplierAdd):
        return _quant.quantize_annotate_layer(layer, IdentityMultiplierAddQuantizeConfig())
    if isinstance(layer, keras.layers.InputLayer):
        return layer.__class__.from_config(layer.get_config())
    return _quant.quantize_annotate_layer(layer)


def quantize_model(model: keras.Model) -> keras.Model:
    """QAT version of a float functional model (same weights, fake-quant nodes inserted everywhere)."""
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    annotated.set_weights(model.get_weights())
    with _quant.quantize_scope(CUSTOM_OBJECTS):
        return _quant.quantize_apply(annotated)


def quantize_scope():
    """Context manager that makes the QAT custom objects known to Keras (for loading QAT models)."""
    return _quant.quantize_scope(CUSTOM_OBJECTS)
