"""Where sandglass's files are: the repository, and the cache of what it downloads or prepares
(the arm64 userland, the QEMU plugin, tuning databases)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """``$SANDGLASS_CACHE``, else ``~/.cache/sandglass``."""
    return Path(os.environ.get("SANDGLASS_CACHE", Path.home() / ".cache" / "sandglass"))


def shown(path: str | os.PathLike) -> str:
    """``path`` as messages and records write it: relative to the repository inside it, from
    ``~`` inside the home directory (so that no one's home ends up in a committed report),
    else absolute."""
    absolute = Path(path).absolute()
    for base, prefix in ((REPO, ""), (Path.home(), "~/")):
        try:
            return prefix + absolute.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(absolute)
