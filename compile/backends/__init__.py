"""Backends: one module per target kind, all with the same two functions.

``Target.kind`` picks the module (``compile/targets.py``, ``targets/*.toml``):

=================  ==============================  =====================================
kind               module                          bundle holds
=================  ==============================  =====================================
``host``           ``compile.backends.host``       ``model.so``, run in-process
``linux-aarch64``  ``compile.backends.aarch64``    aarch64 ``.so`` + runner, qemu-user/RPi
``cortex-m``       ``compile.backends.cortexm``    firmware ELF, QEMU board or real board
=================  ==============================  =====================================

Interface every backend module implements::

    def build(mod: tvm.IRModule, model: ModelInfo, target: Target, out_dir: Path,
              opts: dict) -> dict:
        '''Compile ``mod`` into files under ``out_dir``.

        mod     integer Relax IRModule from ``compile.pipeline.compile_model``: function
                ``main`` takes ONE sample (batch 1, ``model.input.shape``/``dtype``) and
                returns one output; weights are bound as constants.
        model   ``compile.frontend.ModelInfo`` (path, sha256, operators, input/output
                name, shape, dtype, scale, zero_point).
        out_dir an existing empty temp dir; it becomes the bundle when build returns
                (``compile.bundle`` writes ``bundle.json`` and renames it, so a failed
                build never leaves a half-written bundle).
        opts    backend options from ``build.py --opt KEY=VALUE`` (values JSON-decoded
                when possible, else strings); ignore unknown keys.
        returns extra JSON-serialisable entries for ``bundle.json``; put the list of
                files the backend wrote (relative to out_dir) under ``"files"``.
        '''

    def run(bundle_dir: Path, manifest: dict, target: Target, inputs: np.ndarray,
            opts: dict) -> tuple[np.ndarray, dict]:
        '''Run the bundle on N samples.

        manifest  the parsed ``bundle.json`` (``manifest["model"]["input"]`` etc., see
                  ``compile.bundle``); the backend's own entries are at top level.
        inputs    shape (N, *input.shape[1:]), dtype = input dtype (already checked).
        opts      from ``run.py --opt KEY=VALUE``.
        returns   (outputs of shape (N, *output.shape[1:]) and the output dtype,
                  metrics: JSON-serialisable dict, e.g. {"instructions": ...,
                  "seconds_per_sample": ...}; name what was measured honestly).
        '''

``build_bundle`` and ``run_bundle`` below are what the command-line tools call: a .tflite
compiled into a bundle directory, a bundle run on samples.

Raise ``BackendError`` (``compile.errors``) for problems the user can fix (missing cross compiler or emulator,
model too large for the board's memory, ...): the CLIs print its message as ONE line
``error: ...`` and exit 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from compile.bundle import create_bundle, read_manifest
from compile.errors import BackendError
from compile.paths import REPO
from compile.pipeline import compile_model, float_ops
from compile.targets import Target, get_target

# Target.kind -> module name under compile/backends/
MODULES = {
    "host": "host",
    "linux-aarch64": "aarch64",
    "cortex-m": "cortexm",
}


def load_backend(target: Target) -> ModuleType:
    """The backend module for ``target.kind``; BackendError if it is not written yet."""
    name = f"{__name__}.{MODULES[target.kind]}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            raise
        raise BackendError(f"no backend for target kind '{target.kind}' "
                           f"(module {name} is not there yet)") from None


def build_bundle(model: Path, target_name: str, out: Path | None, opts: dict,
                 command: str) -> Path:
    """Compile ``model`` for ``target_name`` into a bundle (default ``build/<model stem>-<target>``);
    returns the bundle path. ``command``: how the build was asked for, kept in ``bundle.json``."""
    target = get_target(target_name)
    backend = load_backend(target)
    if out is None:
        out = REPO / "build" / f"{Path(model).stem}-{target.name}"
    mod, info = compile_model(model)
    create_bundle(out, target, info, float_ops(mod), command,
                  lambda tmp: backend.build(mod, info, target, tmp, opts))
    return out


def run_bundle(bundle: Path, target_name: str, inputs, opts: dict | None = None):
    """(outputs, metrics) of the bundle on ``inputs`` (checked against its model input)."""
    target = get_target(target_name)
    manifest = read_manifest(bundle, target)
    backend = load_backend(target)
    return backend.run(Path(bundle), manifest, target, inputs, opts or {})
