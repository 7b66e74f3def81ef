"""How a report names files: relative to the repository root when they are inside it, so that a committed
report names the same files in any checkout; files elsewhere keep their absolute path."""
from __future__ import annotations

import os
from pathlib import Path

from compile.paths import REPO


def repo_relative(path: str | os.PathLike) -> str:
    """``path`` (relative ones are taken from the current directory) relative to the repository root if it
    lies inside it, else absolute."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(REPO).as_posix()
    except ValueError:
        return str(absolute)


def in_repo(path: str | os.PathLike) -> Path:
    """The file a report names: ``repo_relative``'s result read back against the repository root."""
    return REPO / path
