"""Shared CLI plumbing for compile/build.py, run.py and validate.py (TVMC-like behaviour).

A problem the user can fix (bad file, bad target, wrong input) is printed as ONE line
``error: <what is wrong>`` on stderr with exit code 2 and no traceback; outputs are written
to a temp file in the same directory and renamed, so nothing is ever half-written.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from compile.errors import UserError, user_errors
from compile.paths import REPO
from compile.frontend import ModelInfo

EXIT_USAGE = 2
DEFAULT_MODEL = REPO / "models" / "mobilenext_mcu_m100_int8.tflite"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line ``error: ...`` and exit 2 (no usage dump).

    ``doc``: the script's module docstring; its first paragraph becomes the description.
    """

    def __init__(self, doc: str, **kwargs):
        super().__init__(description=" ".join(doc.split("\n\n")[0].split()), **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see --help)\n")


def main(run: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``run(argv)``; user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return run(argv)
    except user_errors() as err:
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE


def command_line() -> str:
    """How this script was invoked, for bundle.json."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def parse_opts(items: Sequence[str]) -> dict:
    """``--opt KEY=VALUE`` items -> dict; values JSON-decoded when possible, else strings."""
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--opt expects KEY=VALUE, got '{item}'")
        try:
            opts[key] = json.loads(value)
        except ValueError:
            opts[key] = value
    return opts


def add_opt_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option (repeatable), see compile/backends/<kind>.py")


def model_path(value: str | None) -> Path:
    """--model, or the default model with the command that makes it when it is missing."""
    if value is not None:
        path = Path(value)
        if not path.is_file():
            raise UserError(f"model file {value} not found")
        return path
    if not DEFAULT_MODEL.is_file():
        raise UserError(f"default model {DEFAULT_MODEL.relative_to(REPO)} is missing: make it "
                        "with `python keras_model/train.py --preset mobilenext-mcu "
                        "--out models/mobilenext_mcu_m100` or pass --model")
    return DEFAULT_MODEL


def load_inputs(path: Path, info: ModelInfo) -> np.ndarray:
    """A .npy of N samples shaped (N, *input shape[1:]) in the model's input dtype."""
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"input file {path} not found") from None
    except (OSError, ValueError):
        raise UserError(f"input {path} is not a .npy array file") from None
    expected = (info.input.shape[1:], info.input.dtype)
    if x.ndim != len(info.input.shape) or tuple(x.shape[1:]) != tuple(expected[0]):
        raise UserError(f"input {path} has shape {tuple(x.shape)}, the model needs "
                        f"(N, {', '.join(map(str, expected[0]))})")
    if x.dtype != np.dtype(expected[1]):
        raise UserError(f"input {path} has dtype {x.dtype}, the model needs {expected[1]}")
    if x.shape[0] == 0:
        raise UserError(f"input {path} has no samples")
    return x


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"output directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, array)
    _atomic_write(path, write)


def save_json(path: Path, data: dict) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
