"""Default CPU schedules (compile/llvm_cpu/schedules.py): every kernel of a MobileNeXt block is scheduled,
vectorized, and the scheduled build stays bit-exact with LiteRT's reference kernels."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import s_tir

from compile.pipeline import compile_model
from compile.measure import run_litert
from compile.llvm_cpu.schedules import CPUKernelRule
from compile.targets import get_target, resolve_native
from compile.llvm_cpu.rewrites import (MLA_BLOCK, NEON_SQRDMULH, REQUANT_BLOCK, VNNI_BLOCK,
                                  WIDEN_BLOCK)
from compile.llvm_cpu.pipeline import compile_relax_module, fused_tir
from tests.factory import build_tflite, random_int8_inputs
from compile.paths import REPO

TARGET = {"kind": "llvm", "mcpu": "native"}


@pytest.fixture(scope="module", params=["identity_block", "small_cnn"])
def model(request, tmp_path_factory):
    path = build_tflite(request.param, tmp_path_factory.mktemp("schedmodels"))
    mod, _ = compile_model(path)
    return path, mod


def _kernels(mod):
    return [(gv.name_hint, f) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


@pytest.mark.parametrize("target_name", ["host", "rpi4", "rpi5"])
def test_every_kernel_gets_a_vectorized_schedule(model, target_name):
    _, mod = model
    target = tvm.target.Target(resolve_native(get_target(target_name).tvm))
    kernels = _kernels(fused_tir(mod, target))
    assert kernels
    lane_kernels = concat_kernels = x86_requant = 0
    model_name = "identity_block" if "identity_block" in str(model[0]) else str(model[0])
    for name, func in kernels:
        sch = CPUKernelRule().apply(func, target, False)
        if sch is None and not any(s in name for s in ("conv2d", "matmul", "pad")):
            continue   # e.g. the integer softmax: too deep to vectorize, compiled scalar
        assert isinstance(sch, s_tir.Schedule), f"{name} left unscheduled"
        text = sch.mod["main"].script()
        if any(s in name for s in ("conv2d", "matmul")):
            # root + the reduction's init and update + at most one (fused) epilogue block
            # (+ one block per NEON SQRDMULH step, see below, or x86 requantization step;
            # + the converted input of an MLA / VNNI conv)
            extra = (text.count(NEON_SQRDMULH) + text.count(f'T.sblock("{WIDEN_BLOCK}")')
                     + text.count(f'T.sblock("{REQUANT_BLOCK}'))
            assert "_init" in text and text.count("T.sblock(") <= 4 + extra, name
        if REQUANT_BLOCK in text:   # x86: the requantization of the accumulator, for 8 or
            # 16 channels at a time by compile/llvm_cpu/intrin/x86_requant.py (int32 lanes multiplied as int64
            # pairs, not widened); narrower channel tiles vectorized as they are
            assert target_name == "host", name
            x86_requant += 'T.reinterpret("int64x' in text
        weights = re.search(r'T.Buffer\(\(T.int64\((\d+)\), T.int64\((\d+)\)\), "int16"\)', text)
        if f'"{MLA_BLOCK}' in text and weights:   # rpi4: 1x1 convs on int16 weights [K, C]
            k, c = (int(v) for v in weights.groups())
            # SMLAL by lane (compile/llvm_cpu/intrin/neon.py) when K and C fill its vectors
            assert ("llvm.aarch64.neon.smull" in text) == (k % 8 == 0 and c % 4 == 0), name
            lane_kernels += "llvm.aarch64.neon.smull" in text
        if any(s in name for s in ("conv2d", "pad")):   # channel counts divisible by 4
            assert "T.vectorized" in text, name
        if NEON_SQRDMULH in text:   # its own four-lane block, before the wide epilogue
            loop = text.split(NEON_SQRDMULH)[0].rsplit("T.vectorized(", 1)[1]
            assert re.match(r"(T.int64\()?4\)", loop), name
        if f'"{VNNI_BLOCK}' in text:   # x86 with AVX-512 VNNI: 1x1 convs on VPDPBUSD
            assert "llvm.x86.avx512.vpdpbusd" in text, name
        if "if_then_else" in func.script() and "strided_slice" in name:
            # the multiplier's slice + add + concatenation: one vectorized loop per channel
            # part (the part condition constant in each), not one loop choosing per lane
            assert text.count("T.vectorized") >= 2 and "_fused" not in text, name
            concat_kernels += 1
    assert lane_kernels or target_name != "rpi4"
    assert x86_requant or target_name != "host"
    assert concat_kernels or model_name != "identity_block"


@pytest.mark.parametrize("target_name", ["host", "rpi4"])
def test_schedule_is_the_same_outside_a_target_context(model, target_name):
    """MetaSchedule's seeding applies CPUKernelRule outside any target context, the build inside
    one: both must schedule alike (the seeds are the records tuning has to beat; an x86 seed
    with 8-lane requantization steps instead of 16 made every tuned build slower)."""
    _, mod = model
    target = tvm.target.Target(resolve_native(get_target(target_name).tvm))
    for name, func in _kernels(fused_tir(mod, target)):
        outside = CPUKernelRule().apply(func, target, False)
        with target:
            inside = CPUKernelRule().apply(func, target, False)
        assert (outside is None) == (inside is None), name
        if inside is not None:
            assert outside.mod.script() == inside.mod.script(), name


def _emit_aarch64_object(model_path, tmp_path):
    """Build ``model_path`` for rpi4 and write its kernels' object code, in a child process:
    LLVM selects instructions (and aborts on a vector it cannot lower) only when it writes
    the object, and an abort would take the test process with it."""
    import subprocess
    import sys

    script = ("import sys, tvm\n"
              "from compile.pipeline import compile_model\n"
              "from compile.targets import get_target\n"
              "from compile.llvm_cpu.pipeline import compile_relax_module\n"
              "mod, _ = compile_model(sys.argv[1])\n"
              "built = compile_relax_module(mod, tvm.target.Target(get_target('rpi4').tvm))\n"
              "built.executable.mod.imports[0].write_to_file(sys.argv[2])\n")
    repo = REPO
    obj = tmp_path / "kernels.o"
    done = subprocess.run([sys.executable, "-c", script, str(model_path), str(obj)], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert obj.stat().st_size > 0


def test_aarch64_build_compiles_neon_kernels(model, tmp_path):
    """LLVM aborts on NEON intrinsics wider than a register: the rpi4 build must compile."""
    path, mod = model
    assert NEON_SQRDMULH in fused_tir(mod, tvm.target.Target(get_target("rpi4").tvm)).script()
    _emit_aarch64_object(path, tmp_path)


def _neon_vector_loops(func) -> list[int]:
    """Extents of the vectorized loops of ``func`` whose body calls a NEON intrinsic."""
    import tvm_ffi

    found = []

    def visit(node):
        if node.kind == tvm.tirx.ForKind.VECTORIZED and NEON_SQRDMULH in str(node.body):
            found.append(int(node.extent))

    tvm_ffi.structural_walk(func.body, [(tvm.tirx.For, visit)], order="post")
    return found


@pytest.mark.parametrize("channels", [3, 5, 6, 12])
def test_neon_intrinsics_are_vectorized_two_or_four_lanes_wide(channels, tmp_path):
    """LLVM lowers NEON SQRDMULH only on whole D or Q registers (2 or 4 int32 lanes): a
    requantization of 3 channels vectorized 3 lanes wide made it abort the rpi4 build. A mean
    over the pixels requantizes the channels alone, so their count is the loop's extent."""
    from compile.difftest import convert

    spec = {"input": [5, 4, channels], "float_io": False, "per_channel": True, "seed": 0,
            "layers": [{"op": "mean", "in": [0], "keepdims": True}]}
    path = convert.to_tflite(spec, tmp_path / f"mean{channels}.tflite")
    mod, _ = compile_model(path)
    target = tvm.target.Target(get_target("rpi4").tvm)
    extents = []
    for name, func in _kernels(fused_tir(mod, target)):
        sch = CPUKernelRule().apply(func, target, False)
        if sch is not None:
            extents += _neon_vector_loops(sch.mod["main"])
    assert all(e in (2, 4) for e in extents), extents
    assert bool(extents) == (channels % 2 == 0), extents   # odd counts stay scalar
    _emit_aarch64_object(path, tmp_path)


def test_scheduled_build_is_bit_exact(model):
    path, mod = model
    ex = compile_relax_module(mod, tvm.target.Target(resolve_native(TARGET))).executable
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    x = random_int8_inputs(path, 8, seed=3)
    out = np.stack([vm["main"](tvm.runtime.tensor(s[None])).numpy()[0] for s in x])
    np.testing.assert_array_equal(out, run_litert(path, x))


def test_compiled_main_still_checks_its_input(model):
    """Kernels are built without argument asserts (``tirx.disable_assert``): main() itself must
    still reject an input of the wrong shape or dtype with an error, not run on it."""
    path, mod = model
    ex = compile_relax_module(mod, tvm.target.Target(resolve_native(TARGET))).executable
    main = tvm.relax.VirtualMachine(ex, tvm.cpu())["main"]
    good = random_int8_inputs(path, 1, seed=1)
    for bad in (np.zeros((1, 3, *good.shape[2:]), np.int8), good.astype(np.float32)):
        with pytest.raises((RuntimeError, ValueError, TypeError)):
            main(tvm.runtime.tensor(bad))


def test_host_kernel_profile(model, tmp_path):
    """compile/profile.py --target host: every kernel main() calls, timed alone, named by kernel;
    bad input is one line, exit 2."""
    import subprocess
    import sys

    from compile import profile

    path, _ = model
    result = profile.profile_host(path, repeat=2)
    kernels = result["kernels"]
    assert any(name.startswith("fused_conv2d") for name in kernels), kernels
    assert all(us > 0 for us in kernels.values()) and result["whole_model"] > 0
    assert list(kernels.values()) == sorted(kernels.values(), reverse=True)
    assert result["model_library"] == pytest.approx(sum(kernels.values()), abs=0.01)
    repo = REPO
    bad = subprocess.run([sys.executable, "compile/profile.py", "--target", "host", "--model",
                          str(tmp_path / "missing.tflite")], cwd=repo, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "--model" in bad.stderr
