"""Target registry: one declarative TOML file per target/board under ``targets/``.

Every file has ``name``, ``kind`` (``host`` | ``linux-aarch64`` | ``cortex-m``), ``description``
and a ``[tvm] target`` table (TVM's JSON target dict). Kind-specific tables:

* ``linux-aarch64``: ``[toolchain]`` (cross compiler + Debian package), ``[emulator]``
  (qemu-user command), ``[device]`` (how to reach a real board: RPC key, ssh notes).
* ``cortex-m``: ``[cpu]`` (gcc flags), ``[memory]`` (regions: origin/length), ``clock_hz``,
  ``[run]`` (QEMU command, for emulated boards) or ``[flash]`` (pyOCD/OpenOCD, for real boards).

``aliases`` lets ``cortex-m4`` pick ``mps2-an386``, etc.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from compile.errors import UnknownTarget, UserError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
KINDS = ("host", "linux-aarch64", "cortex-m")


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    description: str
    tvm: dict[str, Any]
    data: dict[str, Any] = field(repr=False)
    path: Path = field(repr=False)

    @property
    def aliases(self) -> list[str]:
        return list(self.data.get("aliases", []))

    @property
    def emulated(self) -> bool:
        """True when the target can run here (host, qemu-user, QEMU boards)."""
        return self.kind == "host" or "emulator" in self.data or "run" in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def _load(path: Path) -> Target:
    """The target a board file declares; UserError (one error line) for a broken file."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path} is not valid TOML: {err}") from None
    # the Cortex-M backend emits its own C: its boards have no TVM target
    needed = ("name", "kind", "description") + (() if data.get("kind") == "cortex-m" else ("tvm",))
    for key in needed:
        if key not in data:
            raise UserError(f"{path}: missing '{key}'")
    if data["kind"] not in KINDS:
        raise UserError(f"{path}: kind must be one of {', '.join(KINDS)}")
    if data["name"] != path.stem:
        raise UserError(f"{path}: name '{data['name']}' differs from the file name")
    return Target(data["name"], data["kind"], data["description"],
                  dict(data.get("tvm", {}).get("target", {})), data, path)


def resolve_native(tvm_target: dict[str, Any]) -> dict[str, Any]:
    """Replace ``mcpu = "native"`` (targets/host.toml) by this CPU's name and triple.

    TVM's pip wheel links a conda-built LLVM whose default triple is ``<arch>-conda-linux-gnu``;
    LLVM rejects ``-mcpu=native`` with it and silently falls back to a generic CPU (no AVX), so
    name the CPU and a plain ``<arch>-linux-gnu`` triple. Builds, tuning databases and benchmarks
    all key on the resolved dict.
    """
    if tvm_target.get("kind") != "llvm" or tvm_target.get("mcpu") != "native":
        return dict(tvm_target)
    from tvm.target import codegen

    triple = str(codegen.llvm_get_system_triple()).replace("-conda-", "-")
    return {**tvm_target, "mtriple": triple, "mcpu": str(codegen.llvm_get_system_cpu())}


def all_targets() -> dict[str, Target]:
    """Every declared target by name (aliases not included)."""
    return {t.name: t for t in (_load(p) for p in sorted(TARGETS_DIR.glob("*.toml")))}


def get_target(name: str) -> Target:
    """Look a target up by name or alias; raises UnknownTarget with the known names."""
    targets = all_targets()
    if name in targets:
        return targets[name]
    for t in targets.values():
        if name in t.aliases:
            return t
    known = sorted(list(targets) + [a for t in targets.values() for a in t.aliases])
    raise UnknownTarget(f"unknown target '{name}' (known: {', '.join(known)})")
