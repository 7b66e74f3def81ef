"""Shared pytest setup: Keras 2 (tf_keras) for TensorFlow, selected before anything imports TensorFlow."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
