"""Where sandglass's files are: the repository, and the cache of what it downloads or prepares
(the arm64 userland, the QEMU plugin, tuning databases)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """``$SANDGLASS_CACHE``, else ``~/.cache/sandglass``."""
    return Path(os.environ.get("SANDGLASS_CACHE", Path.home() / ".cache" / "sandglass"))
