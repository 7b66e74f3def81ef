"""Running Python programs for aarch64 here: ``python3.11`` under ``qemu-aarch64 -cpu <board
cpu>`` in the arm64 Debian userland of ``compile.backends.aarch64.sysroot`` (prepared on first use)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from compile.backends.aarch64.sysroot import SysrootError, prepare
from compile.errors import BackendError
from compile.targets import Target

RUN_TIMEOUT_S = 900      # one emulated run (python start + import tvm ~10 s, then the model)


def emulator_command(target: Target) -> list[str]:
    cmd = list(target.get("emulator", {}).get("command", []))
    if not cmd:
        raise BackendError(f"target {target.name} has no [emulator] command to run it here")
    if shutil.which(cmd[0]) is None:
        raise BackendError(f"{cmd[0]} not found: apt-get install "
                           f"{target['emulator'].get('package', 'qemu-user')}")
    return cmd


def run_in_userland(target: Target, script: list[str], *, threads: int = 1,
                    plugin: list[str] | None = None, cwd: Path | None = None,
                    timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python3.11 <script...>`` under qemu-aarch64 (board CPU) in the arm64 userland."""
    emulator = emulator_command(target)
    try:
        sysroot = prepare(log=lambda m: print(m, file=sys.stderr, flush=True))
    except SysrootError as err:
        raise BackendError(f"arm64 userland: {err}") from None
    if plugin:
        emulator = [emulator[0], "-plugin", ",".join(plugin), "-d", "plugin", *emulator[1:]]
    env = sysroot.env({"TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                       "PYTHONHASHSEED": "0"})
    try:
        return subprocess.run([*sysroot.python_command(emulator), *script], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError(f"emulated run took longer than {timeout:.0f} s; stopped") from None
