"""Keras (Keras 2, ``tf_keras``) models of the sandglass project: MobileNeXt and the MobileNetV2 baseline.

Importing this package selects Keras 2 for TensorFlow (``TF_USE_LEGACY_KERAS=1``) before anything imports
TensorFlow, because tensorflow-model-optimization's QAT only works with Keras 2. All model code uses
``import tf_keras as keras``.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
