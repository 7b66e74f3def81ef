"""The models a report compares: MobileNeXt mcu at several identity multipliers, and MobileNetV2 mcu.

A catalog name resolves to the trained model ``models/NAME_int8.tflite`` (+ ``models/NAME.json``, written by
``keras_model/train.py``, with its accuracy) when it exists; otherwise the harness builds the same
architecture *untrained* (fixed seed) and exports it int8 with a short calibration on Fashion-MNIST training
images (``keras_model.export.convert_int8``), cached under ``CACHE/models/``. Untrained models are good for
everything the report measures except accuracy, which is then reported as missing.

A model can also be given as a path to an int8 ``.tflite``; its metadata (``identity_multiplier``, ``arch``,
accuracy) is read from ``STEM.json`` next to it (``NAME_int8.tflite`` -> ``NAME.json``) when present.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from compile.paths import REPO
from harness.paths import repo_relative

MODELS_DIR = REPO / "models"
CALIBRATION_IMAGES = 32  # representative images for the int8 export of untrained models

# Catalog: report name -> (registry preset, overrides). Multipliers 1, 1/2, 1/3, 1/4, 1/6 of the paper's
# identity tensor multiplier study (arXiv 2007.02269, Table 5) and the MobileNetV2 baseline.
CATALOG = {
    "mobilenext_mcu_m100": ("mobilenext-mcu", {"identity_multiplier": 1.0}),
    "mobilenext_mcu_m050": ("mobilenext-mcu", {"identity_multiplier": 1 / 2}),
    "mobilenext_mcu_m033": ("mobilenext-mcu", {"identity_multiplier": 1 / 3}),
    "mobilenext_mcu_m025": ("mobilenext-mcu", {"identity_multiplier": 1 / 4}),
    "mobilenext_mcu_m017": ("mobilenext-mcu", {"identity_multiplier": 1 / 6}),
    "mobilenetv2_mcu": ("mobilenetv2-mcu", {}),
}
DEFAULT_MODEL = "mobilenext_mcu_m100"


class ModelSpecError(ValueError):
    """A model name or path the harness cannot use (one line for the user)."""


@dataclass
class ModelEntry:
    name: str
    path: Path
    arch: str | None                  # "mobilenext" | "mobilenetv2" | None (unknown)
    identity_multiplier: float | None  # None: not a MobileNeXt (or unknown)
    trained: bool
    accuracy: float | None            # int8 test accuracy (0..1) from the model's JSON, if trained
    source: str                       # where the file came from, for the report

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def to_json(self) -> dict:
        return {"name": self.name, "path": repo_relative(self.path), "sha256": self.sha256(), "arch": self.arch,
                "identity_multiplier": self.identity_multiplier, "trained": self.trained,
                "accuracy": self.accuracy, "source": self.source}


def _accuracy(meta: dict) -> float | None:
    """The int8 accuracy of a model JSON (``keras_model/train.py`` writes ``accuracy.int8_tflite``; a plain
    number under ``accuracy`` is taken too), searched one level deep."""
    keys = ("int8_tflite", "accuracy")
    for scope in (meta, *(v for v in meta.values() if isinstance(v, dict))):
        for key in keys:
            if isinstance(scope.get(key), (int, float)) and not isinstance(scope.get(key), bool):
                return float(scope[key])
    return None


def _sidecar(path: Path) -> dict:
    stem = path.stem[:-5] if path.stem.endswith("_int8") else path.stem
    for candidate in (path.with_name(stem + ".json"), path.with_suffix(".json")):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def _meta_field(meta: dict, key: str):
    for scope in (meta, *(v for v in meta.values() if isinstance(v, dict))):
        if key in scope:
            return scope[key]
    return None


def _from_file(name: str, path: Path, source: str) -> ModelEntry:
    """Entry of a .tflite file; trained = its JSON has an accuracy (unless it says ``"trained": false``)."""
    meta = _sidecar(path)
    multiplier = _meta_field(meta, "identity_multiplier")
    accuracy = _accuracy(meta) if _meta_field(meta, "trained") is not False else None
    return ModelEntry(name, path, _meta_field(meta, "arch"), None if multiplier is None else float(multiplier),
                      accuracy is not None, accuracy, source)


def build_untrained(name: str, out: Path) -> None:
    """Build catalog model ``name`` untrained (seeded) and export it int8 to ``out`` (+ ``NAME.json``)."""
    from keras_model.data import load_dataset
    from keras_model.export import convert_int8, write_atomic
    from keras_model.factory import create_model, model_config

    import tf_keras as keras

    preset, overrides = CATALOG[name]
    config = model_config(preset, **overrides)
    keras.utils.set_random_seed(0)
    model = create_model(preset, **overrides)
    images, _ = load_dataset("train", config["resolution"], config["channels"], limit=CALIBRATION_IMAGES)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"arch": config["arch"], "identity_multiplier": config.get("identity_multiplier"),
            "trained": False, "preset": preset, "config": config,
            "calibration": f"{CALIBRATION_IMAGES} Fashion-MNIST training images"}
    write_atomic(out.with_name(name + ".json"), json.dumps(meta, indent=1).encode())
    write_atomic(out, convert_int8(model, images))


def _untrained_path(spec: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / "models" / f"{spec}_int8.tflite"


def existing_file(spec: str, cache_dir: Path) -> Path | None:
    """The .tflite ``resolve(spec)`` would use, if it exists already (None: an untrained model to build)."""
    if spec.endswith(".tflite"):
        return Path(spec) if Path(spec).is_file() else None
    for path in (MODELS_DIR / f"{spec}_int8.tflite", _untrained_path(spec, cache_dir)):
        if path.is_file():
            return path
    return None


def needs_build(spec: str, cache_dir: Path) -> bool:
    """True when ``resolve(spec)`` builds the untrained model first (a catalog name with neither a trained
    file nor a cached build)."""
    return spec in CATALOG and existing_file(spec, cache_dir) is None


def resolve(spec: str, cache_dir: Path) -> ModelEntry:
    """Catalog name or .tflite path -> ModelEntry; builds the untrained int8 model when needed."""
    if spec.endswith(".tflite"):
        path = Path(spec).absolute()
        if not path.is_file():
            raise ModelSpecError(f"model file {spec} does not exist")
        return _from_file(path.stem.removesuffix("_int8"), path, repo_relative(path))
    if spec not in CATALOG:
        raise ModelSpecError(f"unknown model '{spec}' (known: {', '.join(CATALOG)}, or a path to a .tflite)")
    trained = MODELS_DIR / f"{spec}_int8.tflite"
    if trained.is_file():
        entry = _from_file(spec, trained, f"models/{trained.name}")
    else:
        cached = _untrained_path(spec, cache_dir)
        if not cached.is_file():
            build_untrained(spec, cached)
        entry = _from_file(spec, cached, "built untrained by the harness (seed 0)")
    preset, overrides = CATALOG[spec]
    entry.arch = entry.arch or preset.split("-")[0]
    if entry.identity_multiplier is None:
        entry.identity_multiplier = overrides.get("identity_multiplier")
    return entry
