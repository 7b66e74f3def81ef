"""The trace QEMU TCG plugin (``sgtrace.c``, ours) built against Debian's QEMU header.

Debian ships no ``qemu-plugin.h`` in a binary package, so the header comes from the source
package of the installed QEMU (``apt-get source --download-only qemu`` with a private apt state
whose sources list is the host's, turned into ``deb-src``; nothing changes on the host). Only
``include/qemu/qemu-plugin.h`` is kept; the plugin is then ``gcc -shared`` of one C file.

Cached in ``~/.cache/sandglass/qemu-plugin/<qemu version>/libsgtrace.so``;
``python -m compile.cyclemodel.plugin`` builds it and prints the path.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from compile.paths import cache_root

SOURCE = Path(__file__).with_name("sgtrace.c")
HEADER = "include/qemu/qemu-plugin.h"
LIBRARY = "libsgtrace.so"


class PluginError(RuntimeError):
    """The plugin cannot be built here (no deb-src access, no gcc, ...)."""


def qemu_version(qemu: str = "qemu-aarch64") -> str:
    """Debian version of the installed QEMU (from ``qemu-aarch64 --version``)."""
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"\(Debian ([^)]+)\)", out) or re.search(r"version (\S+)", out)
    if not found:
        raise PluginError(f"cannot tell the version of {qemu}: {out.strip()[:80]}")
    return found.group(1)


def _deb_src_sources(out: Path) -> Path:
    """The host's apt sources (deb822 and one-line), as deb-src entries, in ``out``."""
    parts = []
    etc = Path("/etc/apt")
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        parts.append(re.sub(r"(?m)^Types:.*$", "Types: deb-src", path.read_text()))
    lines = []
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            lines += [re.sub(r"^deb\s", "deb-src ", ln) for ln in path.read_text().splitlines()
                      if ln.startswith("deb ")]
    (out / "sources.list.d").mkdir(parents=True, exist_ok=True)
    (out / "sources.list.d" / "src.sources").write_text("\n\n".join(p.strip() for p in parts)
                                                        + "\n")
    (out / "sources.list").write_text("\n".join(lines) + "\n")
    return out


def _fetch_header(work: Path, dest: Path) -> None:
    etc = _deb_src_sources(work / "etc")
    apt = work / "apt"
    (apt / "lists" / "partial").mkdir(parents=True)
    opts = {"Dir::Etc::SourceList": etc / "sources.list",
            "Dir::Etc::SourceParts": etc / "sources.list.d",
            "Dir::State::Lists": apt / "lists", "Dir::Cache": apt,
            "Dir::State::status": "/dev/null",
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
            "Debug::NoLocking": "1"}
    args = [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]
    for cmd in (["apt-get", *args, "-qq", "update"],
                ["apt-get", *args, "-qq", "source", "--download-only", "qemu"]):
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if proc.returncode:
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise PluginError(f"{' '.join(cmd[:1] + cmd[-2:])} failed: {tail}")
    tarballs = sorted(work.glob("qemu_*.orig.tar.*"))
    if not tarballs:
        raise PluginError("apt-get source qemu brought no orig tarball")
    with tarfile.open(tarballs[0]) as tar:
        member = next((m for m in tar if m.name.endswith("/" + HEADER)), None)
        if member is None:
            raise PluginError(f"{tarballs[0].name} has no {HEADER}")
        dest.write_bytes(tar.extractfile(member).read())


def build(log=lambda m: print(m, file=sys.stderr)) -> Path:
    """Path of ``libsgtrace.so`` for the installed QEMU, building it on first use."""
    cache = cache_root() / "qemu-plugin" / re.sub(r"[^A-Za-z0-9.+-]", "_", qemu_version())
    lib = cache / LIBRARY
    if lib.exists() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
            return lib
        header = cache / "qemu-plugin.h"
        if not header.exists():
            log(f"qemu-plugin: fetching {HEADER} from Debian's qemu source ({qemu_version()})")
            work = Path(tempfile.mkdtemp(prefix="qemu-src-", dir=cache))
            try:
                _fetch_header(work, work / "qemu-plugin.h")
                os.replace(work / "qemu-plugin.h", header)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise PluginError("no host C compiler: apt-get install gcc")
        glib = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True,
                              text=True).stdout.split()
        tmp = cache / f".{LIBRARY}.tmp"
        proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-I", str(cache), *glib,
                               str(SOURCE), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode:
            raise PluginError(f"building {SOURCE.name} failed: {proc.stderr.strip()[-300:]}")
        os.replace(tmp, lib)
        log(f"qemu-plugin: built {lib}")
    return lib


def main() -> int:
    try:
        print(build())
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
