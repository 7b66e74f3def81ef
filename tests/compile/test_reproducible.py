"""Builds are reproducible: the same model and target give byte-identical bundles (the bundle's
``created`` and ``command`` fields aside) wherever they are written, and a Cortex-M bundle's
firmware builds to a byte-identical ELF.  One Cortex-M board and one aarch64 target."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compile.paths import REPO
from tests.factory import build_tflite

BUILD = REPO / "compile" / "build.py"
# what differs by design between two builds of the same model: when and how it was asked for
VOLATILE = ("created", "command")


def _build(model: Path, target: str, out: Path) -> None:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(BUILD), "--model", str(model), "--target",
                             target, "--out", str(out)], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("target", ["mps2-an386", "rpi4"])
def test_same_model_same_target_same_bytes(target, tmp_path):
    model = build_tflite("small_cnn", tmp_path)
    outs = [tmp_path / "first" / "bundle", tmp_path / "second, elsewhere" / "bundle"]
    for out in outs:
        _build(model, target, out)
    first, second = (_files(out) for out in outs)
    assert first.keys() == second.keys()
    manifests = [json.loads(files.pop("bundle.json")) for files in (first, second)]
    for manifest in manifests:
        for key in VOLATILE:
            manifest.pop(key)
    assert manifests[0] == manifests[1]
    assert [name for name in first if first[name] != second[name]] == []
    if manifests[0].get("project"):          # a Cortex-M firmware project: its ELF too
        elves = []
        for out in outs:
            proj = out / manifests[0]["project"]
            subprocess.run(["make", "-s"], cwd=proj, check=True, capture_output=True,
                           timeout=300)
            elves.append((proj / "build" / "firmware.elf").read_bytes())
        assert elves[0] == elves[1]
