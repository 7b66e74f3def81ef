"""Bundle: the directory a build hands to run/validate, described by ``bundle.json``.

A bundle is built in a temp dir next to its final place (``DIR.tmp-PID-XXXX``) and renamed
to ``DIR`` only when the backend and the manifest are complete, so a failed build never
leaves a half-written bundle.  An existing bundle at ``DIR`` is replaced; any other non-empty
directory is left alone.  Two builds racing to the same ``DIR`` each publish a complete
bundle, the last one stays; a full disk is one ``error:`` line with ``DIR`` as it was; temp
dirs left by a killed build (their PID no longer runs) are removed by the next build there.

``bundle.json`` (FORMAT_VERSION 1)::

    format, format_version   "sandglass-bundle", 1
    target                   {"name", "kind", "tvm": TVM target dict}
    model                    ModelInfo: path, sha256, operators [[name, version]],
                             input/output {name, shape (batch 1), dtype, scale, zero_point}
    float_ops                Relax ops with a float result left after lowering ({} for int8 I/O)
    files                    files of the bundle, relative to it (from the backend)
    versions                 {"sandglass", "tvm", "tvm_ffi", "python"}
    command                  the build command line
    created                  UTC time, ISO 8601
    ...                      the backend's own entries (compile.backends)
"""
from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from compile.frontend import ModelInfo
from compile.targets import Target
from compile.errors import BundleError

FORMAT = "sandglass-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
# Keys the backend's extra entries must not overwrite ("files" is the backend's to fill).
_RESERVED = ("format", "format_version", "target", "model", "float_ops", "versions",
             "command", "created")


def _versions() -> dict:
    return {
        "sandglass": metadata.version("sandglass"),
        "tvm": metadata.version("apache-tvm"),
        "tvm_ffi": metadata.version("apache-tvm-ffi"),
        "python": platform.python_version(),
    }


def create_bundle(out: Path, target: Target, model: ModelInfo, float_ops: dict[str, int],
                  command: str, build: Callable[[Path], dict]) -> dict:
    """Run ``build(tmp_dir) -> extra manifest entries`` and publish ``tmp_dir`` as ``out``."""
    out = Path(out).absolute()
    if not _replaceable(out):
        raise BundleError(f"{out} exists and is not a bundle; refusing to overwrite it")

    def fill(tmp: Path) -> dict:
        extra = build(tmp)
        clash = sorted(set(extra) & set(_RESERVED))
        if clash:
            raise RuntimeError(f"backend returned reserved manifest keys {clash}")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "target": {"name": target.name, "kind": target.kind, "tvm": target.tvm},
            "model": model.to_json(),
            "float_ops": float_ops,
            "files": [],
            "versions": _versions(),
            "command": command,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    return write_dir(out, fill, "the bundle", BundleError)


def write_dir(out: Path, fill: Callable[[Path], object], what: str,
              error: type[Exception]) -> object:
    """``fill(tmp)`` in a temp dir next to ``out``, then ``publish``: ``out`` is replaced only
    by a complete directory.  A full disk raises ``error`` naming ``what`` with ``out`` as it
    was; anything else removes the temp dir and propagates.  Returns what ``fill`` returns."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        result = fill(tmp)
        publish(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise error(f"no space left on the device while writing {what} {out}; nothing "
                        "was written there") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


# another build's bundle can appear at out between moving the old one aside and the rename
_PUBLISH_TRIES = 5


def publish(tmp: Path, out: Path) -> None:
    """Rename tmp to out; an old bundle at out is moved aside first and removed after.  If
    another build publishes out in between, its bundle is moved aside in turn: the last
    build to publish wins, and out is always one complete bundle."""
    for _ in range(_PUBLISH_TRIES):
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-{os.getpid()}-",
                                        dir=out.parent))
            try:
                os.replace(out, old / "bundle")
            except FileNotFoundError:          # the other build moved it aside first
                pass
        try:
            os.replace(tmp, out)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue                          # out reappeared: another build published
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return
    raise BundleError(f"{out} kept being replaced by other builds; this build's bundle was "
                      "discarded")


def _replaceable(out: Path) -> bool:
    """out is absent, an empty directory or a bundle.  Another build may be swapping its
    bundle in meanwhile (out briefly missing, then another bundle): a check that sees a
    non-bundle is repeated, a directory that is no bundle stays one."""
    for _ in range(_PUBLISH_TRIES):
        if out.is_dir():
            try:
                if not any(out.iterdir()) or (out / MANIFEST).is_file():
                    return True
            except FileNotFoundError:
                return True
        elif not out.exists():
            return True
    return False


def _remove_stale(out: Path) -> None:
    """Temp dirs next to out (``NAME.tmp-PID-*``, ``NAME.old-PID-*``) of builds that no
    longer run: a killed build cannot remove its own."""
    for path in out.parent.glob(f"{out.name}.*-*-*"):
        kind, _, rest = path.name[len(out.name) + 1:].partition("-")
        pid = rest.partition("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or not path.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:                # another user's live process
            pass


def read_manifest(bundle_dir: Path, target: Target | None = None) -> dict:
    """Parsed ``bundle.json``; BundleError if it is missing/foreign or built for another target."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a bundle (no {MANIFEST}); "
                          "make one with compile/build.py")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BundleError(f"{path} is not readable JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not a sandglass bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path} has bundle format version {manifest.get('format_version')}, "
                          f"this sandglass reads version {FORMAT_VERSION}: rebuild it")
    if target is not None and manifest["target"]["name"] != target.name:
        raise BundleError(f"bundle {bundle_dir} was built for target "
                          f"'{manifest['target']['name']}', not '{target.name}'")
    return manifest


def model_info(manifest: dict) -> ModelInfo:
    """The ModelInfo a bundle was built from."""
    return ModelInfo.from_json(manifest["model"])
