"""arm64 Debian bookworm userland for running Raspberry Pi bundles under ``qemu-aarch64`` (qemu-user).

Prepared from Debian's own arm64 packages and PyPI's aarch64 wheels, never from a prebuilt image:

1. a private apt state (``APT::Architecture=arm64``, the host's sources list, nothing changed on the
   host) resolves and downloads the closure of ``python3.11`` + ``libstdc++6``;
2. ``dpkg -x`` unpacks every ``.deb`` into ``root/``;
3. ``pip install --target site/ --platform manylinux2014_aarch64 --only-binary=:all:`` adds the
   aarch64 wheels of the host's apache-tvm / apache-tvm-ffi / numpy pins and ai-edge-litert.

The result is cached in ``~/.cache/sandglass/arm64-sysroot`` (``$SANDGLASS_CACHE`` overrides the
cache root) and reused; ``python -m compile.backends.aarch64.sysroot`` prepares it ahead of time, every user does it
on first use. A file lock keeps concurrent first uses from preparing it twice.

``python -m compile.backends.aarch64.sysroot --rpc-server HOST:PORT --key rpi4`` then runs TVM's RPC server in it
(tuning through the tracker without a Pi; qemu timings, see ``compile.llvm_cpu.tuning``).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from compile.paths import cache_root

ARCH = "arm64"
SUITE = "bookworm"            # matches the host's apt sources; python3.11 like the project venv
PYTHON_VERSION = "3.11"
# Debian packages whose dependency closure forms the userland (apt resolves the rest).
DEB_PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1")
# PyPI wheels: the host's exact versions where the host has them, so both sides run the same code.
PINNED_FROM_HOST = ("apache-tvm", "apache-tvm-ffi", "numpy")
# LiteRT (bench), cloudpickle + psutil (TVM's RPC server: `python -m tvm.exec.rpc_server`)
UNPINNED = ("ai-edge-litert", "cloudpickle", "psutil")
# bookworm's glibc is 2.36: every manylinux tag up to it fits (pip does not expand them itself)
WHEEL_PLATFORMS = ("manylinux2014_aarch64",
                   *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
# -cpu name -> (MIDR part number, /proc/cpuinfo features) of the Arm cores on the boards
CPUINFO = {
    "cortex-a53": ("0xd03", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": ("0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                            "cpuid asimdrdm lrcpc dcpop asimddp"),
}
FORMAT = 2                     # bump when the layout below changes: forces a rebuild


class SysrootError(RuntimeError):
    """Preparing the userland failed; the message says which step and why."""


@dataclass(frozen=True)
class Sysroot:
    path: Path

    @property
    def root(self) -> Path:          # the unpacked Debian packages (qemu -L)
        return self.path / "root"

    @property
    def site(self) -> Path:          # the aarch64 wheels
        return self.path / "site"

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / f"python{PYTHON_VERSION}"

    def manifest(self) -> dict:
        return json.loads((self.path / "sysroot.json").read_text())

    def python_command(self, emulator: list[str]) -> list[str]:
        """``emulator`` (e.g. ``["qemu-aarch64", "-cpu", "cortex-a72"]``) running the arm64 python,
        its ``-L`` prefix the per-CPU view of the userland (``cpu_root``)."""
        cpu = emulator[emulator.index("-cpu") + 1] if "-cpu" in emulator else "cortex-a72"
        return [*emulator, "-L", str(self.cpu_root(cpu)), str(self.python)]

    def cpu_root(self, cpu: str) -> Path:
        """The userland as seen by a ``cpu`` guest: symlinks to ``root/`` plus a fake ``/proc/cpuinfo``
        and ``/sys/devices/system/cpu`` for one core of that CPU.

        qemu-user 7.2 passes the *host's* (x86) /proc/cpuinfo and CPU topology through; LiteRT's
        cpuinfo library crashes on them. qemu looks every absolute path up under the ``-L``
        prefix first, so these files shadow the host's. Created on first use, idempotent.
        """
        if cpu not in CPUINFO:
            raise SysrootError(f"no /proc/cpuinfo model for -cpu {cpu} (known: {', '.join(CPUINFO)})")
        view = self.path / f"cpu-{cpu}"
        if (view / "proc" / "cpuinfo").exists():
            return view
        tmp = Path(tempfile.mkdtemp(prefix=f".cpu-{cpu}-", dir=self.path))
        for entry in self.root.iterdir():
            (tmp / entry.name).symlink_to(entry.resolve() if entry.is_symlink() else entry)
        (tmp / "proc").mkdir()
        part, features = CPUINFO[cpu]
        (tmp / "proc" / "cpuinfo").write_text(
            f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
            f"CPU part\t: {part}\nCPU revision\t: 3\n\n")
        cpus = tmp / "sys" / "devices" / "system" / "cpu"
        cpus.mkdir(parents=True)
        for name in ("possible", "present", "online"):
            (cpus / name).write_text("0\n")
        try:
            os.replace(tmp, view)
        except OSError:          # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return view

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment for the emulated python: only the userland's packages are seen."""
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp"),
               "PYTHONHOME": str(self.root / "usr"), "PYTHONPATH": str(self.site),
               "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
               # run-only: load libtvm_runtime.so, not the 240 MB compiler library
               "TVM_USE_RUNTIME_LIB": "1"}
        env.update(extra or {})
        return env


def guest_python(sysroot: Sysroot, cpu: str) -> dict[str, str]:
    """Environment for an emulated python that itself starts python subprocesses.

    TVM's RPC server runs its loop in a ``sys.executable`` subprocess; without binfmt_misc the
    host cannot exec an aarch64 ELF, so ``sys.executable`` is pointed (``sitecustomize``) at a
    host shell script that re-enters qemu-aarch64 with the same CPU and userland view.
    """
    view = sysroot.cpu_root(cpu)
    wrapper = view.parent / f"python-{cpu}.sh"
    site = view.parent / "guest-site"
    if not wrapper.exists():
        wrapper.write_text(f"#!/bin/sh\nexec qemu-aarch64 -cpu {cpu} -L {view} {sysroot.python} \"$@\"\n")
        wrapper.chmod(0o755)
    if not (site / "sitecustomize.py").exists():
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import os, sys\n"
            "if os.environ.get('SANDGLASS_GUEST_PYTHON'):\n"
            "    sys.executable = os.environ['SANDGLASS_GUEST_PYTHON']\n")
    return sysroot.env({"PYTHONPATH": f"{site}:{sysroot.site}",
                        "SANDGLASS_GUEST_PYTHON": str(wrapper)})


def rpc_server_command(sysroot: Sysroot, cpu: str, tracker: str, key: str,
                       port: int = 9090) -> tuple[list[str], dict[str, str]]:
    """(command, env) of a TVM RPC server in the emulated userland, registered as ``key``.

    Lets the aarch64 tuning path (cross-compiled candidates uploaded and run over RPC) work
    without a Pi; the times it measures are qemu's, not the board's: they only rank candidates
    roughly. Use a real Pi for real tuning.
    """
    env = guest_python(sysroot, cpu)
    env["TVM_NUM_THREADS"] = "1"
    cmd = [*sysroot.python_command(["qemu-aarch64", "-cpu", cpu]), "-m", "tvm.exec.rpc_server",
           "--tracker", tracker, "--key", key, "--host", "127.0.0.1", "--port", str(port),
           "--port-end", str(port + 100),
           # random_fill_for_measure (MetaSchedule's RPC runner) lives in the runtime extras
           "--load-library", str(sysroot.site / "tvm" / "lib" / "libtvm_runtime_extra.so")]
    return cmd, env


def default_path() -> Path:
    return cache_root() / f"{ARCH}-sysroot"


def _run(cmd: list[str], step: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    except FileNotFoundError as e:
        raise SysrootError(f"{step}: {e.filename} not found") from None
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or e.stdout or "").strip().splitlines()[-3:]
        raise SysrootError(f"{step} failed: {' | '.join(tail)}") from None


def _apt_options(apt_dir: Path) -> list[str]:
    opts = {"APT::Architecture": ARCH, "APT::Architectures::": ARCH,
            "Dir::State::Lists": apt_dir / "lists", "Dir::Cache": apt_dir,
            "Dir::Cache::archives": apt_dir / "archives",
            "Dir::State::status": "/dev/null", "Dir::State::extended_states": apt_dir / "ext",
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
            "Debug::NoLocking": "1", "APT::Install-Recommends": "0"}
    return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]


def _debian_userland(work: Path, root: Path, log) -> list[str]:
    """Download the arm64 closure of DEB_PACKAGES and unpack it into ``root``; returns the .deb names."""
    apt_dir = work / "apt"
    for d in ("lists/partial", "archives/partial"):
        (apt_dir / d).mkdir(parents=True, exist_ok=True)
    opts = _apt_options(apt_dir)
    log(f"sysroot: apt-get update ({ARCH}, private state in {apt_dir})")
    _run(["apt-get", *opts, "-qq", "update"], "apt-get update")
    log(f"sysroot: downloading the {ARCH} closure of {' '.join(DEB_PACKAGES)}")
    _run(["apt-get", *opts, "-qq", "-y", "--download-only", "install", *DEB_PACKAGES],
         "apt-get download")
    debs = sorted((apt_dir / "archives").glob("*.deb"))
    if not debs:
        raise SysrootError("apt-get download: no .deb files arrived")
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
    # merged /usr: the arm64 dynamic loader is looked up as /lib/ld-linux-aarch64.so.1
    for d in ("lib", "bin", "sbin"):
        if not (root / d).exists():
            (root / d).symlink_to(f"usr/{d}")
    return [d.name for d in debs]


def _wheels(site: Path, log) -> dict[str, str]:
    """pip-install the aarch64 wheels for python3.11 into ``site``; returns name -> version."""
    reqs = [f"{n}=={metadata.version(n)}" for n in PINNED_FROM_HOST] + list(UNPINNED)
    log(f"sysroot: pip install (aarch64 wheels) {' '.join(reqs)}")
    plat = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(site),
          *plat, "--python-version", PYTHON_VERSION, "--implementation", "cp",
          "--only-binary=:all:", *reqs], "pip install (aarch64 wheels)")
    found = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        found[name.lower().replace("_", "-")] = version
    # the host-side compiler library is not needed to *run* a bundle; it is 240 MB
    compiler = site / "tvm" / "lib" / "libtvm_compiler.so"
    if compiler.exists():
        compiler.unlink()
    return found


def prepare(path: Path | None = None, force: bool = False, log=print) -> Sysroot:
    """Return the ready userland at ``path``, preparing it first if needed (idempotent, locked)."""
    path = path or default_path()
    sysroot = Sysroot(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _ready(sysroot):
            return sysroot
        start = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        try:
            staged = Sysroot(work / "out")
            staged.root.mkdir(parents=True)
            debs = _debian_userland(work, staged.root, log)
            wheels = _wheels(staged.site, log)
            log("sysroot: checking the emulated python")
            _run(["qemu-aarch64", "-L", str(staged.root), str(staged.python), "-c",
                  "import sys; print(sys.version)"], "qemu-aarch64 python3.11",
                 env=Sysroot(staged.path).env())
            (staged.path / "sysroot.json").write_text(json.dumps(
                {"format": FORMAT, "suite": SUITE, "arch": ARCH, "debs": debs,
                 "wheels": wheels}, indent=1))
            if path.exists():
                shutil.rmtree(path)
            os.replace(staged.path, path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"sysroot: ready in {path} ({time.monotonic() - start:.0f} s)")
        return sysroot


def _ready(sysroot: Sysroot) -> bool:
    try:
        return sysroot.manifest().get("format") == FORMAT and sysroot.python.exists()
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compile.backends.aarch64.sysroot", description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, help=f"where to put it (default {default_path()})")
    ap.add_argument("--force", action="store_true", help="prepare again even if it is ready")
    ap.add_argument("--rpc-server", metavar="TRACKER",
                    help="then run an emulated TVM RPC server registered at TRACKER (HOST:PORT)")
    ap.add_argument("--key", default="rpi4", help="its RPC key (default rpi4)")
    ap.add_argument("--cpu", default="cortex-a72", choices=sorted(CPUINFO), help="its -cpu")
    args = ap.parse_args(argv)
    try:
        s = prepare(args.path, force=args.force, log=lambda m: print(m, file=sys.stderr))
        if args.rpc_server:
            cmd, env = rpc_server_command(s, args.cpu, args.rpc_server, args.key)
            print(f"sysroot: emulated RPC server (qemu -cpu {args.cpu}, key {args.key}); "
                  "its timings are qemu's, not a board's", file=sys.stderr)
            return subprocess.call(cmd, env=env)
    except SysrootError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(s.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
