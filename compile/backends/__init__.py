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

Raise ``BackendError`` for problems the user can fix (missing cross compiler or emulator,
model too large for the board's memory, ...): the CLIs print its message as ONE line
``error: ...`` and exit 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from compile.targets import Target

# Target.kind -> module name under compile/backends/
MODULES = {
    "host": "host",
    "linux-aarch64": "aarch64",
    "cortex-m": "cortexm",
}


class BackendError(RuntimeError):
    """A backend problem the user can fix; reported as one line, exit code 2."""


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
