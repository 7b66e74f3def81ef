"""Raspberry Pi backend: aarch64 bundles, run under qemu-aarch64 in the arm64 Debian userland.

The first test prepares the userland (compile.backends.aarch64.sysroot, ~15 s + downloads the first time, then
cached in ~/.cache/sandglass/arm64-sysroot).
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compile.backends import aarch64
from compile.backends.aarch64 import userland
from compile.errors import BackendError
from compile.bundle import create_bundle, read_manifest
from compile.pipeline import compile_model, float_ops
from compile.measure import run_litert
from compile.backends.aarch64.sysroot import prepare
from compile.targets import get_target
from tests.factory import build_tflite, random_int8_inputs
from compile.paths import REPO

pytestmark = pytest.mark.emulator

EM_AARCH64 = 183      # ELF e_machine of AArch64


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tflite("identity_block", tmp_path_factory.mktemp("a64models"))


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2, "not a 64-bit ELF"
    return int.from_bytes(header[18:20], "little")


def test_userland_python_runs_under_qemu():
    sysroot = prepare()
    proc = subprocess.run(
        [*sysroot.python_command(["qemu-aarch64", "-cpu", "cortex-a72"]), "-c",
         "import platform, sys; print(platform.machine(), sys.version_info[:2])"],
        env=sysroot.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "aarch64"
    assert sysroot.manifest()["wheels"]["apache-tvm"]   # the aarch64 wheel is there


def test_rpi4_cli_build_and_run_equal_litert(model, tmp_path):
    """compile/build.py --target rpi4 -> aarch64 ELF; compile/run.py under qemu == LiteRT."""
    bundle = tmp_path / "rpi4"
    build = subprocess.run([sys.executable, "compile/build.py", "--target", "rpi4",
                            "--model", str(model), "--out", str(bundle)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    manifest = read_manifest(bundle)
    assert set(manifest["files"]) == {"model.so", "run.py", "README.md"}
    assert _elf_machine(bundle / "model.so") == EM_AARCH64
    assert "pip install apache-tvm==" in (bundle / "README.md").read_text()
    # 1x1 convs multiply by vector lane (compile/llvm_cpu/intrin/neon.py): smlal v.4s, v.4h, v.h[lane]
    assert _count_insn(bundle / "model.so", "smlal", r"v\d+\.4s, v\d+\.4h, v\d+\.h\[\d\]") > 0

    x = random_int8_inputs(model, 6, seed=3)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([sys.executable, "compile/run.py", "--target", "rpi4", "--bundle",
                          str(bundle), "--input", str(tmp_path / "x.npy"), "--output",
                          str(tmp_path / "y.npy"), "--json", str(tmp_path / "m.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8 and y.shape[0] == 6
    np.testing.assert_array_equal(y, run_litert(model, x))
    # and what one inference costs on the Pi: instructions, estimated cycles and ms, bytes moved
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["cycles_estimate"] > 0 and m["instructions_per_inference"] > 0
    assert m["ms_estimate"] == pytest.approx(m["cycles_estimate"] / 1.5e6, rel=1e-3)
    assert m["estimate"]["cpu"] == "cortex-a72" and m["traffic"]["memory"]["load_bytes"] > 0


@pytest.mark.parametrize("name", ["identity_block", "identity_block_48"])
def test_rpi5_dotprod_bundle_equals_host_build(name, tmp_path):
    """Cortex-A76 (+dotprod) build under qemu -cpu cortex-a76 == the host build, bit for bit."""
    from compile.backends import host

    model = build_tflite(name, tmp_path)
    mod, info = compile_model(model)
    x = random_int8_inputs(model, 3, seed=5)
    outputs = {}
    for name, backend in (("rpi5", aarch64), ("host", host)):
        target = get_target(name)
        manifest = create_bundle(tmp_path / name, target, info, float_ops(mod), "test",
                                 lambda d: backend.build(mod, info, target, d, {}))
        outputs[name], metrics = backend.run(tmp_path / name, manifest, target, x, {})
    assert metrics is not None
    assert _elf_machine(tmp_path / "rpi5" / "model.so") == EM_AARCH64
    # the 1x1 convs run on SDOT (tensorized), which the cortex-a72 build has none of; by lane
    # (compile/llvm_cpu/intrin/neon.py) when their input channels come in sixteens
    assert _count_insn(tmp_path / "rpi5" / "model.so", "sdot") > 0
    by_lane = _count_insn(tmp_path / "rpi5" / "model.so", "sdot", r"\.4b\[\d\]")
    assert (by_lane > 0) == (name == "identity_block_48")
    np.testing.assert_array_equal(outputs["rpi5"], outputs["host"])
    np.testing.assert_array_equal(outputs["rpi5"], run_litert(model, x))


def _count_insn(library, mnemonic: str, operands: str = "") -> int:
    """How often ``mnemonic`` (with operands matching the regex ``operands``) occurs in the
    disassembly of an aarch64 library."""
    out = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(library)], capture_output=True,
                         text=True, check=True).stdout
    return sum(1 for line in out.splitlines()
               if f"\t{mnemonic}\t" in line and re.search(operands, line.split(mnemonic, 1)[1]))


def _with(target, **tables):
    data = {**target.data, **tables}
    return dataclasses.replace(target, data=data)


def test_missing_cross_compiler_names_the_package(model, tmp_path):
    target = _with(get_target("rpi4"), toolchain={"cc": "aarch64-sandglass-missing-gcc",
                                                  "package": "gcc-aarch64-linux-gnu"})
    with pytest.raises(BackendError, match="apt-get install gcc-aarch64-linux-gnu"):
        aarch64.check_toolchain(target)
    mod, info = compile_model(model)
    with pytest.raises(BackendError, match="aarch64-sandglass-missing-gcc not found"):
        aarch64.build(mod, info, target, tmp_path, {})
    assert not any(tmp_path.iterdir()), "a failed build wrote files"


def test_missing_emulator_names_the_package():
    target = _with(get_target("rpi4"), emulator={"command": ["qemu-sandglass-missing"],
                                                 "package": "qemu-user"})
    with pytest.raises(BackendError, match="apt-get install qemu-user"):
        userland.emulator_command(target)


def test_aarch64_tuning_without_device_is_one_line_error(model, tmp_path):
    """--tune-trials for the Pi needs the RPC tracker: exit 2, one line, no bundle."""
    out = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "compile/build.py", "--target", "rpi4", "--model",
                           str(model), "--out", str(out), "--tune-trials", "4",
                           "--tuning-db", str(tmp_path / "db")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "--rpc-tracker" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_kernel_profile_adds_up(model, tmp_path):
    """compile/profile.py: per-kernel instructions and estimated cycles of a bundle under qemu,
    named by kernel, largest first."""
    from compile import profile

    target = get_target("rpi4")
    mod, info = compile_model(model)
    create_bundle(tmp_path / "b", target, info, float_ops(mod), "test",
                  lambda d: aarch64.build(mod, info, target, d, {}))
    result = profile.profile_bundle(target, tmp_path / "b", repeat=2)
    kernels = result["kernels"]
    assert any(name.startswith("fused_conv2d") for name in kernels), kernels
    assert result["model"]["instructions"] == sum(r["instructions"] for r in kernels.values()) > 0
    cycles = [r["cycles_estimate"] for r in kernels.values()]
    assert cycles == sorted(cycles, reverse=True) and cycles[0] > 0
    assert all(r["load_bytes"] > 0 for r in kernels.values() if r["instructions"] > 1000)
    # the kernels are a part of what the bench plugin counts for a whole inference
    from compile.backends.aarch64.counting import instructions_per_inference

    assert result["model"]["instructions"] < instructions_per_inference(
        target, tmp_path / "b", repeat=2, cycles=False)["tvm"]
