"""Model registry, in the style of timm: architectures register their builder with ``@register_model``,
presets are named sets of builder arguments, and ``create_model("mobilenext-mcu", width=0.5)`` builds one.
The architecture modules import this one to register; ``keras_model.factory`` imports them all, so use
its ``create_model`` and friends.

The knobs of an architecture are the keyword arguments of its builder (their defaults are the architecture's
defaults); ``model_config`` resolves preset + overrides into the full dict and validates it in one place.
"""

import inspect

# name -> builder(**knobs) -> keras.Model. Filled by the ``register_model`` decorators of the arch modules.
_ARCHS = {}

# Presets: name -> (arch, knob overrides). The "-mcu" presets are the microcontroller models of the project:
# 64x64 grey images (Fashion-MNIST upscaled), 10 classes, width 0.35 with the last stage scaled as well.
_MCU = dict(width=0.35, resolution=64, channels=1, classes=10, scale_last_stage=True)
_PRESETS = {
    "mobilenext-1.0": ("mobilenext", {}),                        # paper / reference: 224x224x3, 1000 classes
    "mobilenetv2-1.0": ("mobilenetv2", {}),                      # = keras.applications.MobileNetV2
    "mobilenext-mcu": ("mobilenext", {**_MCU, "identity_multiplier": 1.0}),
    "mobilenetv2-mcu": ("mobilenetv2", dict(_MCU)),
}
DEFAULT_PRESET = "mobilenext-mcu"

# Builder arguments that are not architecture knobs.
_NOT_KNOBS = {"name"}


def register_model(arch):
    """Decorator registering ``builder`` as architecture ``arch``."""
    def decorator(builder):
        _ARCHS[arch] = builder
        return builder
    return decorator


def list_models():
    """Registered architecture names."""
    return sorted(_ARCHS)


def list_presets():
    """Preset names."""
    return sorted(_PRESETS)


def arch_defaults(arch):
    """The knobs of ``arch`` with their default values."""
    if arch not in _ARCHS:
        raise ValueError(f"unknown model {arch!r} (architectures: {', '.join(list_models())}; "
                         f"presets: {', '.join(list_presets())})")
    params = inspect.signature(_ARCHS[arch]).parameters
    return {k: p.default for k, p in params.items() if k not in _NOT_KNOBS}


def model_config(name, **overrides):
    """Full, validated config of an architecture or preset with ``overrides`` applied:
    ``{"arch": ..., "width": ..., "resolution": ..., ...}``. Raises ``ValueError`` on bad input."""
    arch, preset = _PRESETS.get(name, (name, {}))
    config = arch_defaults(arch)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"{arch} has no option {', '.join(unknown)} (options: {', '.join(config)})")
    config.update(preset)
    config.update(overrides)
    _validate(config)
    return {"arch": arch, **config}


def _validate(c):
    def number(key):
        value = c[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return value

    def integer(key):
        value = c[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return value

    if number("width") <= 0:
        raise ValueError(f"width must be > 0, got {c['width']}")
    if "identity_multiplier" in c and not 0 < number("identity_multiplier") <= 1:
        raise ValueError(f"identity_multiplier must be in (0, 1], got {c['identity_multiplier']}")
    if integer("resolution") < 32:
        raise ValueError(f"resolution must be >= 32, got {c['resolution']}")
    if integer("channels") < 1:
        raise ValueError(f"channels must be >= 1, got {c['channels']}")
    if integer("classes") < 2:
        raise ValueError(f"classes must be >= 2, got {c['classes']}")
    if not 0 <= number("dropout") < 1:
        raise ValueError(f"dropout must be in [0, 1), got {c['dropout']}")
    if not isinstance(c["scale_last_stage"], bool):
        raise ValueError(f"scale_last_stage must be true or false, got {c['scale_last_stage']!r}")


def create_model(name=DEFAULT_PRESET, **overrides):
    """Build the Keras model of architecture or preset ``name`` with knob ``overrides``."""
    config = model_config(name, **overrides)
    arch = config.pop("arch")
    return _ARCHS[arch](**config, name=name.replace("-", "_").replace(".", "_"))
