"""Every architecture registered (``keras_model.registry``), and the functions that build them:
``create_model("mobilenext-mcu", width=0.5)``, ``model_config``, ``list_models``, ``list_presets``."""

from keras_model import mobilenetv2, mobilenext  # noqa: F401  (each registers its architecture)
from keras_model.registry import (DEFAULT_PRESET, create_model, list_models,  # noqa: F401
                                  list_presets, model_config)
