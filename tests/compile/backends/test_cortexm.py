"""Cortex-M backend: generated C firmware, built with arm-none-eabi-gcc, run on QEMU boards.

Real tools only: the Relax -> C flow, `make` with -Wall -Werror, qemu-system-arm with
semihosting; outputs are compared bit for bit with LiteRT's reference kernels.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tvm.script import ir as I
from tvm.script import relax as R

from compile.backends import cortexm
from compile.errors import BackendError
from compile.backends.cortexm import memplan, project
from compile.backends.cortexm.graph import lower_model
from compile.pipeline import compile_model
from compile.measure import run_litert
from compile.targets import all_targets, get_target
from tests.factory import build_tflite, random_int8_inputs
from compile.paths import REPO

pytestmark = pytest.mark.emulator

BUILD, RUN = REPO / "compile" / "build.py", REPO / "compile" / "run.py"
QEMU_BOARDS = ["mps2-an386", "mps2-an500", "mps3-an547"]
CORTEX_M = sorted(n for n, t in all_targets().items() if t.kind == "cortex-m")


def cli(script: Path, *args, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("cm_models")
    return {name: build_tflite(name, out) for name in ("small_cnn", "identity_block")}


@pytest.fixture(scope="module")
def graphs(models):
    return {name: lower_model(compile_model(path)[0]) for name, path in models.items()}


def test_generated_c_compiles_warning_free_for_every_board(graphs, tmp_path):
    assert {"mps2-an386", "mps2-an500", "mps3-an547", "stm32f746g-disco", "nucleo-l4r5zi",
            "nrf52840dk"} <= set(CORTEX_M)
    graph = graphs["small_cnn"]
    weights = sum(t.nbytes for t in graph.tensors.values() if t.kind == "const")
    for name in CORTEX_M:
        target = get_target(name)
        proj = tmp_path / name
        proj.mkdir()
        x = np.zeros((1, 16, 16, 1), np.int8)
        facts = project.write_project(graph, target, proj, x)
        sizes = project.make_firmware(proj, target)      # -Wall -Wextra -Werror
        # unreferenced constants are dropped by --gc-sections
        assert 0 < sizes["weights_bytes"] <= weights + 16 * len(graph.tensors)
        assert sizes["code_bytes"] > 0
        assert facts["arena_bytes"] <= 1.05 * facts["arena_lower_bound"]
        link = (proj / "link.ld").read_text()
        mem = target["memory"]
        assert f"ORIGIN = {hex(mem['flash']['origin'])}, LENGTH = {hex(mem['flash']['length'])}" \
            in link and "ASSERT(" in link


def test_aliases_pick_qemu_boards():
    assert [get_target(a).name for a in ("cortex-m4", "cortex-m7", "cortex-m55")] == QEMU_BOARDS


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_small_cnn_bit_exact_on_qemu_board(board, models, graphs, tmp_path):
    """The lowered graph (shared by the boards) as firmware with 3 embedded inputs."""
    target = get_target(board)
    x = random_int8_inputs(models["small_cnn"], 3, seed=7)
    facts = project.write_project(graphs["small_cnn"], target, tmp_path, x)
    project.make_firmware(tmp_path, target)
    records, summary = project.run_firmware(tmp_path / "build/firmware.elf", target, 120)
    y = np.array([r["y"] for r in records], np.int8)
    np.testing.assert_array_equal(y, run_litert(models["small_cnn"], x, reference=True))
    assert [r["idx"] for r in records] == [0, 1, 2]
    assert all(r["instr"] > graphs["small_cnn"].macs > 0 for r in records)
    assert summary["arena"] == facts["arena_bytes"] and summary["n"] == 3
    assert 0 < summary["stack"] < 16384


def test_cli_build_and_run_on_m4(models, tmp_path):
    out = tmp_path / "bundle"
    result = cli(BUILD, "--target", "cortex-m4", "--model", models["identity_block"],
                 "--out", out)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["target"]["name"] == "mps2-an386"
    assert manifest["tflm_arena"]["head_bytes"] > 0
    x = random_int8_inputs(models["identity_block"], 2, seed=3)
    np.save(tmp_path / "x.npy", x)
    result = cli(RUN, "--target", "mps2-an386", "--bundle", out, "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy", "--json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, run_litert(models["identity_block"], x, reference=True))
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["instructions_per_mac"] > 0 and metrics["flash_weights_bytes"] > 0
    assert metrics["arena_bytes"] >= metrics["arena_lower_bound"] > 0


def test_run_estimates_cycles_and_traffic(models, tmp_path):
    """run.py on a QEMU board: estimated cycles and ms at its clock beside the instructions, and
    the bytes moved per memory region; the trace saw exactly the inferences the firmware ran."""
    out = tmp_path / "bundle"
    assert cli(BUILD, "--target", "mps2-an386", "--model", models["small_cnn"],
               "--out", out).returncode == 0
    np.save(tmp_path / "x.npy", random_int8_inputs(models["small_cnn"], 3, seed=1))
    result = cli(RUN, "--target", "mps2-an386", "--bundle", out, "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy", "--json", tmp_path / "m.json",
                 "--opt", "batch=2")
    assert result.returncode == 0, result.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    # the plugin's window (model entry .. its return) and SysTick count the same instructions
    assert m["estimate"]["instructions"] == pytest.approx(m["instructions_per_inference"], rel=1e-3)
    # a single-issue core: at least one cycle per instruction; zero-wait SSRAM: min = max
    assert m["cycles_estimate"] == m["cycles_estimate_max"] >= m["instructions_per_inference"]
    assert m["ms_estimate"] == pytest.approx(m["cycles_estimate"] / 25e3, rel=1e-3)
    assert m["estimate"]["cpu"] == "cortex-m4" and m["estimate"]["unmodeled_instructions"] == 0
    # every weight byte is read at least once per inference, the arena is written
    assert m["traffic"]["weights"]["load_bytes"] >= m["flash_weights_bytes"] > 0
    assert m["traffic"]["arena"]["store_bytes"] > 0


def test_real_board_runs_on_its_qemu_twin(models, tmp_path):
    """A real board's firmware runs on the QEMU board with its core; the estimate uses the real
    board's clock and flash: a range, since its flash accelerator may hide the wait states."""
    out = tmp_path / "bundle"
    assert cli(BUILD, "--target", "nucleo-l4r5zi", "--model", models["small_cnn"],
               "--out", out).returncode == 0
    x = random_int8_inputs(models["small_cnn"], 2, seed=2)
    np.save(tmp_path / "x.npy", x)
    result = cli(RUN, "--target", "nucleo-l4r5zi", "--bundle", out, "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy", "--json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  run_litert(models["small_cnn"], x, reference=True))
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["board"] == "nucleo-l4r5zi" and m["emulated_on"] == "mps2-an386"
    assert m["cycles_estimate_max"] > m["cycles_estimate"] > 0
    assert m["ms_estimate"] == pytest.approx(m["cycles_estimate"] / 120e3, rel=1e-3)
    low, high = m["estimate"]["flash_stall_cycles"]
    assert low == 0 < high


def test_kernel_profile_on_firmware(models, tmp_path):
    """profile.py on a Cortex-M bundle: per kernel instructions and estimated cycles, adding up
    to the whole inference the run reports."""
    from compile import profile

    out = tmp_path / "bundle"
    assert cli(BUILD, "--target", "mps2-an500", "--model", models["small_cnn"],
               "--out", out).returncode == 0
    result = profile.profile_firmware(get_target("mps2-an500"), out)
    kernels = result["kernels"]
    assert result["cpu"] == "cortex-m7"
    assert "sg_conv_s8" in kernels and "sg_dwconv_s8" in kernels, kernels   # firmware/sg_nn.h
    cycles = [r["cycles_estimate"] for r in kernels.values()]
    assert cycles == sorted(cycles, reverse=True) and sum(cycles) == result["model"]["cycles_estimate"]


def test_step_profile_against_another_bundle(models, tmp_path):
    """profile.py --steps: every kernel call's instructions in its place (-DSG_PROFILE), named
    as bundle.json lists the steps; --against a bundle of the same model puts its counts beside
    (the same bundle: no call changes)."""
    from compile import profile

    out = tmp_path / "bundle"
    assert cli(BUILD, "--target", "mps2-an386", "--model", models["small_cnn"],
               "--out", out).returncode == 0
    result = profile.profile_steps(get_target("mps2-an386"), out)
    manifest = json.loads((out / "bundle.json").read_text())
    assert [s["kernel"] for s in result["steps"]] == manifest["step_kernels"]
    assert len(result["steps"]) == manifest["steps"]
    assert all(s["instructions"] > 0 and s["tuned"] is None for s in result["steps"])
    shown = cli(REPO / "compile" / "profile.py", "--target", "mps2-an386", "--bundle", out,
                "--steps", "--against", out)
    assert shown.returncode == 0, shown.stderr
    assert f"0 of {manifest['steps']} calls more than against by more than two counter ticks " \
        "(80 instructions)" in shown.stdout
    assert "+0.0%" in shown.stdout
    assert_user_error(cli(REPO / "compile" / "profile.py", "--target", "mps2-an386",
                          "--bundle", out, "--against", out), "--steps")


@pytest.mark.parametrize("edit, words", [
    (lambda d: {**d, "timing": {**d["timing"], "cpu": "cortex-m99"}}, ("cortex-m99", "cycle model")),
    (lambda d: {k: v for k, v in d.items() if k != "timing"}, ("[timing]",)),
    (lambda d: {k: v for k, v in d.items() if k != "clock_hz"}, ("clock_hz",)),
    (lambda d: {**d, "timing": {**d["timing"], "flash_wait_states": "many"}}, ("numbers",)),
])
def test_board_file_without_timing_data_is_a_user_error(edit, words):
    """The cycle model's board data missing or wrong: a UserError (one error line, exit 2)."""
    import dataclasses

    from compile.cyclemodel import timing_of
    from compile.errors import UserError

    board = get_target("nucleo-l4r5zi")
    broken = dataclasses.replace(board, data=edit(dict(board.data)))
    with pytest.raises(UserError) as err:
        timing_of(broken)
    assert all(w in str(err.value) for w in words), err.value


def test_missing_llvm_mca_is_a_user_error(models, tmp_path):
    out = tmp_path / "bundle"
    assert cli(BUILD, "--target", "mps2-an386", "--model", models["small_cnn"],
               "--out", out).returncode == 0
    np.save(tmp_path / "x.npy", random_int8_inputs(models["small_cnn"], 1, seed=0))
    bare = tmp_path / "bin"     # /usr/bin without LLVM 19's llvm-mca
    bare.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if not tool.name.startswith("llvm-mca"):
            (bare / tool.name).symlink_to(tool)
    result = cli(RUN, "--target", "mps2-an386", "--bundle", out, "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy", "--json", tmp_path / "m.json",
                 env={"PATH": f"{Path(sys.executable).parent}:{bare}"})
    assert_user_error(result, "llvm-mca-19 not found", "llvm-19")
    assert not (tmp_path / "y.npy").exists() and not (tmp_path / "m.json").exists()


def test_integer_model_has_no_float_in_kernels(graphs, tmp_path):
    """identity_block is conv/depthwise/add/concat only: the firmware must not touch the FPU."""
    target = get_target("mps2-an386")
    project.write_project(graphs["identity_block"], target, tmp_path,
                          np.zeros((1, 8, 8, 8), np.int8))
    source = (tmp_path / "model.c").read_text()
    assert not re.search(r"\b(float|double)\b", source)
    project.make_firmware(tmp_path, target)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "build/firmware.elf")],
                         capture_output=True, text=True, check=True).stdout
    fp = re.findall(r"\bv(?:add|sub|mul|div|mla|fma|cvt\w*)\.f(?:32|64)\b", dis)
    assert fp == [], fp[:5]


def test_instruction_counter_counts_instructions(graphs, tmp_path):
    """A loop of 1e6 x (subs, bne) must read 2e6 instructions on every QEMU board."""
    loop = ('#include "board.h"\nint main(void) {\n  board_init();\n'
            '  uint64_t s = board_cycles();\n  uint32_t n = 1000000;\n'
            '  __asm__ volatile("1: subs %0, %0, #1\\n\\tbne 1b" : "+r"(n));\n'
            '  uint64_t c = board_cycles() - s;\n  return c > 2002000u || c < 1998000u;\n}\n')
    for board in QEMU_BOARDS:
        target = get_target(board)
        proj = tmp_path / board
        proj.mkdir()
        project.write_project(graphs["identity_block"], target, proj,
                              np.zeros((1, 8, 8, 8), np.int8))
        (proj / "main.c").write_text(loop)
        project.make_firmware(proj, target)
        proc = subprocess.run([*target["run"]["command"], "-kernel",
                               str(proj / "build/firmware.elf")], timeout=60)
        assert proc.returncode == 0, board


def test_fit_check_fires_on_small_board(tmp_path):
    import tensorflow as tf
    import tf_keras as keras

    inp = keras.Input((320, 320, 1), batch_size=1)
    out = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Conv2D(4, 3, padding="same")(inp))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [np.random.default_rng(i).random((1, 320, 320, 1), np.float32)] for i in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model = tmp_path / "big.tflite"
    model.write_bytes(converter.convert())
    result = cli(BUILD, "--target", "nrf52840dk", "--model", model, "--out", tmp_path / "b")
    assert_user_error(result, "does not fit nrf52840dk", "RAM", str(256 * 1024))
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["big.tflite"]


def test_unknown_board_is_one_line(models, tmp_path):
    result = cli(BUILD, "--target", "mps9-an999", "--model", models["identity_block"],
                 "--out", tmp_path / "b")
    assert_user_error(result, "unknown target 'mps9-an999'", "mps2-an386")
    assert not (tmp_path / "b").exists()


def test_missing_toolchain_names_debian_package(models, tmp_path):
    result = cli(BUILD, "--target", "mps2-an386", "--model", models["identity_block"],
                 "--out", tmp_path / "b", env={"PATH": str(tmp_path)})
    assert_user_error(result, "arm-none-eabi-gcc", "gcc-arm-none-eabi")
    assert list(tmp_path.iterdir()) == []


def test_hanging_firmware_is_stopped(graphs, tmp_path):
    target = get_target("mps2-an386")
    project.write_project(graphs["identity_block"], target, tmp_path,
                          np.zeros((1, 8, 8, 8), np.int8))
    (tmp_path / "main.c").write_text("int main(void) {\n  for (;;) {\n  }\n}\n")
    project.make_firmware(tmp_path, target)
    start = time.monotonic()
    with pytest.raises(BackendError, match="did not finish within 2 s"):
        project.run_firmware(tmp_path / "build/firmware.elf", target, timeout=2)
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547"])
def test_faulting_firmware_names_the_function(board, graphs, tmp_path):
    """An undefined instruction in a function of the firmware: the HardFault handler prints
    the faulting PC, the host names the function it lies in."""
    target = get_target(board)
    project.write_project(graphs["identity_block"], target, tmp_path,
                          np.zeros((1, 8, 8, 8), np.int8))
    (tmp_path / "main.c").write_text(
        '#include "board.h"\n'
        "__attribute__((noinline)) void sg_broken_step(void) { __asm__ volatile(\"udf #7\"); }\n"
        "int main(void) {\n  board_init();\n  sg_broken_step();\n  return 0;\n}\n")
    project.make_firmware(tmp_path, target)
    with pytest.raises(BackendError, match=r"faulted: HardFault at pc=0x[0-9a-f]{8} in "
                                           r"sg_broken_step \(lr=0x[0-9a-f]{8}, CFSR=0x"):
        project.run_firmware(tmp_path / "build/firmware.elf", target, timeout=60)


def test_stack_overflow_is_an_error(graphs, tmp_path):
    """The real firmware with a stack too small for the model's kernels: the stack runs past
    its limit into the data below it, and the host says so, from the high-water mark or,
    when the overrun wrecked what the kernels use, from where the faulting frame was."""
    import dataclasses

    base = get_target("mps2-an386")
    data = {**base.data, "memory": {**base["memory"], "stack_bytes": 64}}
    target = dataclasses.replace(base, data=data)
    project.write_project(graphs["small_cnn"], target, tmp_path,
                          np.zeros((1, 16, 16, 1), np.int8))
    project.make_firmware(tmp_path, target)
    with pytest.raises(BackendError, match="used all of its 64-byte stack and overflowed|"
                                           "overflowed its 64-byte stack"):
        project.run_firmware(tmp_path / "build/firmware.elf", target, timeout=60)


@I.ir_module
class UnsupportedOp:
    @R.function
    def main(x: R.Tensor((1, 4), "int8")) -> R.Tensor((1, 4), "int8"):
        y = R.call_dps_packed("sg_no_such_kernel", (x,), out_ty=R.Tensor((1, 4), "int8"))
        return y


def test_unsupported_op_is_a_user_error_and_leaves_nothing(models, tmp_path):
    from compile.bundle import create_bundle
    from compile.frontend import read_model

    _, info = read_model(models["identity_block"])
    target = get_target("mps2-an386")
    with pytest.raises(BackendError, match="unsupported operator relax.call_dps_packed"):
        create_bundle(tmp_path / "b", target, info, {}, "test",
                      lambda tmp: cortexm.build(UnsupportedOp, info, target, tmp, {}))
    assert list(tmp_path.iterdir()) == []


def test_memory_plan_of_real_graph_never_overlaps(graphs):
    for graph in graphs.values():
        plan, buffers = project.plan_memory(graph)
        memplan.check(buffers, plan)
        assert plan.arena_bytes <= 1.05 * plan.lower_bound
        # every activation the steps touch has a place, constants/input/output do not
        placed = {n for n, t in graph.tensors.items() if t.kind in ("activation", "workspace")}
        assert set(plan.offsets) == placed


# -- kernels that use the core (compile/backends/cortexm/intrin.py, firmware/sg_kernels.h) ------------
def _dot_check_source(seed: int = 5) -> str:
    """C source of ``int sg_check(void)``: the sg_dot*_s8 helpers on random int8 vectors
    (lengths the models use, odd lengths, unaligned starts, the int8 extremes) vs numpy's
    int64 result, and the requantization helpers ``sg_mac_s32`` (int32 extremes, negative
    64-bit accumulators) and ``sg_sat_s8``; returns the number of wrong results."""
    rng = np.random.default_rng(seed)
    cases = [(4, 0), (8, 1), (16, 3), (20, 2), (48, 0), (64, 1), (200, 3), (7, 1), (1, 0), (0, 0)]
    x = rng.integers(-128, 128, 512, dtype=np.int64)
    w = rng.integers(-128, 128, 512, dtype=np.int64)
    x[:64:2], w[:64:2] = -128, -128         # the largest products
    rows = []
    for i, (n, off) in enumerate(cases):
        acc = [int(a) for a in rng.integers(-2 ** 20, 2 ** 20, 4)]
        # the second pixel xs and the second weight row ws elements on: packed (n) or laid
        # out wider, as in strided convolutions and kernels larger than 1x1
        xs, ws = (n, n) if i % 2 else (n + 3 + i, n + 9 * i)
        # sg_dot_s8 with w[off:], sg_dot2_s8 with the rows w[off:] and w[off + ws:],
        # sg_dot22_s8 also with the second pixel x[off + xs:]
        expect = [acc[2 * p + r] + int(np.dot(x[off + p * xs:off + p * xs + n],
                                               w[off + r * ws:off + r * ws + n]))
                  for p in (0, 1) for r in (0, 1)]
        rows.append("  {" + ", ".join(map(str, [n, off, *acc, *expect, xs, ws])) + "},")
    fmt = ", ".join
    # sg_mac_s32(acc, x, y) = acc + x * y in int64 (Python ints are exact)
    i32 = [-2 ** 31, 2 ** 31 - 1, -1, 0, 1, 2 ** 30, *map(int, rng.integers(-2 ** 31, 2 ** 31, 6))]
    macs = [(a, x, y, a + x * y) for a in (0, 2 ** 30, -(2 ** 61) - 3, 2 ** 61 + 5)
            for x, y in zip(i32, reversed(i32))]
    sats = [(v, min(max(v, -128), 127)) for v in (-2 ** 31, -129, -128, -5, 0, 127, 128, 2 ** 31 - 1)]
    c32 = {-2 ** 31: "INT32_MIN"}.get      # -2147483648 is not an int literal in C
    mac_c = fmt(f"{{INT64_C({a}), {c32(x, x)}, {c32(y, y)}, INT64_C({r})}}"
                for a, x, y, r in macs)
    sat_c = fmt(f"{{{c32(v, v)}, {r}}}" for v, r in sats)
    return (f'#include <stdint.h>\n#include "sg_kernels.h"\n'
            "static const struct { int64_t acc; int32_t x, y; int64_t r; } MACS[] = {"
            f"{mac_c}}};\n"
            f"static const int32_t SATS[][2] = {{{sat_c}}};\n"
            f"static const int8_t X[] = {{{fmt(map(str, x))}}};\n"
            f"static const int8_t W[] = {{{fmt(map(str, w))}}};\n"
            f"static const int32_t CASES[][12] = {{\n" + "\n".join(rows) + "\n};\n"
            "int sg_check(void) {\n  int bad = 0;\n"
            "  for (unsigned i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {\n"
            "    const int32_t *c = CASES[i];\n"
            "    int32_t acc2[2] = {c[2], c[3]};\n"
            "    int32_t acc22[5] = {c[2], c[3], 0, c[4], c[5]};  /* row stride 3 */\n"
            "    bad += sg_dot_s8(X + c[1], W + c[1], c[0], c[2]) != c[6];\n"
            "    sg_dot2_s8(X + c[1], W + c[1], c[11], c[0], acc2);\n"
            "    bad += (acc2[0] != c[6]) + (acc2[1] != c[7]);\n"
            "    sg_dot22_s8(X + c[1], c[10], W + c[1], c[11], c[0], acc22, 3);\n"
            "    bad += (acc22[0] != c[6]) + (acc22[1] != c[7]) + (acc22[2] != 0);\n"
            "    bad += (acc22[3] != c[8]) + (acc22[4] != c[9]);\n  }\n"
            "  for (unsigned i = 0; i < sizeof MACS / sizeof MACS[0]; i++)\n"
            "    bad += sg_mac_s32(MACS[i].acc, MACS[i].x, MACS[i].y) != MACS[i].r;\n"
            "  for (unsigned i = 0; i < sizeof SATS / sizeof SATS[0]; i++)\n"
            "    bad += sg_sat_s8(SATS[i][0]) != SATS[i][1];\n"
            "  return bad;\n}\n")


def test_dot_helper_c_fallback_matches_numpy(tmp_path):
    """The plain-C path of the helpers, compiled with the host gcc."""
    (tmp_path / "check.c").write_text(_dot_check_source() +
                                      "int main(void) { return sg_check(); }\n")
    subprocess.run(["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
                    f"-I{REPO / 'firmware'}", "-o", str(tmp_path / "check"),
                    str(tmp_path / "check.c")], check=True)
    assert subprocess.run([str(tmp_path / "check")]).returncode == 0


def test_dot_helper_simd_paths_match_numpy_on_qemu(graphs, tmp_path):
    """SMLAD path (M4, M7) and Helium path (M55) of the helpers, run on the QEMU boards; the
    disassembly shows the instructions each core was meant to use."""
    # board -> (objdump options, an instruction of the helper's SIMD path)
    expected = {"mps2-an386": ([], r"smlad"), "mps2-an500": ([], r"smlad"),
                "mps3-an547": (["-m", "armv8.1-m.main"], r"vmlava\w*\.s8")}
    for board, (options, insn) in expected.items():
        target = get_target(board)
        proj = tmp_path / board
        proj.mkdir()
        project.write_project(graphs["identity_block"], target, proj,
                              np.zeros((1, 8, 8, 8), np.int8))
        (proj / "main.c").write_text(_dot_check_source() + '#include "board.h"\n'
                                     "int main(void) {\n  board_init();\n"
                                     "  return sg_check();\n}\n")
        project.make_firmware(proj, target)
        dis = subprocess.run(["arm-none-eabi-objdump", "-d", *options,
                              str(proj / "build/firmware.elf")],
                             capture_output=True, text=True, check=True).stdout
        assert re.search(rf"\s{insn}\s", dis), (board, insn)
        proc = subprocess.run([*target["run"]["command"], "-kernel",
                               str(proj / "build/firmware.elf")], timeout=60)
        assert proc.returncode == 0, board


def test_kernels_use_the_core(models, tmp_path):
    """TVM's kernels, for the convolutions the library does not take (``library=False``
    sends them all there): 1x1 convolutions call the SIMD dot helper for 2 pixels x 2
    output channels at a time (weights relaid out OHWI at compile time), depthwise
    convolutions work on 4-channel tiles; the requantization multiplies int32 by int32
    multipliers (stored narrowed) with SMLAL and clamps with SSAT; the M4 firmware contains
    these instructions."""
    graphs = {name: lower_model(compile_model(path)[0], library=False)
              for name, path in models.items()}
    for graph in graphs.values():
        sources = "\n".join(k.source for k in graph.kernels.values())
        assert "sg_dot22_s8(" in sources
        assert re.search(r"group_conv2d_nhwc_intermediate\[4\]", sources)
        assert "#pragma GCC unroll 4" in sources
        assert "sg_mac_s32(sg_mac_s32(" in sources and "sg_sat_s8(" in sources
        consts = [t for t in graph.tensors.values() if t.kind == "const"]
        assert not [t.name for t in consts if t.dtype == "int64"
                    and np.all(np.abs(t.data) < 2 ** 31)]
        assert any(t.dtype == "int32" and np.all(t.data >= 2 ** 30) for t in consts)
    target = get_target("mps2-an386")
    project.write_project(graphs["small_cnn"], target, tmp_path, np.zeros((1, 16, 16, 1), np.int8))
    project.make_firmware(tmp_path, target)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "build/firmware.elf")],
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"\ssmlad\s", dis) and re.search(r"\ssxtb16\s", dis)
    assert re.search(r"\ssmlal\s", dis) and re.search(r"\sssat\s", dis)


@I.ir_module
class ConvHWIO:
    @R.function
    def main(x: R.Tensor((1, 4, 4, 8), "int8"), w: R.Tensor((1, 1, 8, 16), "int8"),
             d: R.Tensor((3, 3, 8, 1), "int8")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO", out_dtype="int32")
            z = R.nn.conv2d(x, d, padding=[1, 1, 1, 1], groups=8, data_layout="NHWC",
                            kernel_layout="HWOI", out_dtype="int32")
            out = (y, z)
            R.output(out)
        return out


@I.ir_module
class ConvOHWI:
    @R.function
    def main(x: R.Tensor((1, 4, 4, 8), "int8"), w: R.Tensor((1, 1, 8, 16), "int8"),
             d: R.Tensor((3, 3, 8, 1), "int8")):
        with R.dataflow():
            wt = R.permute_dims(w, axes=[3, 0, 1, 2])
            y = R.nn.conv2d(x, wt, data_layout="NHWC", kernel_layout="OHWI", out_dtype="int32")
            z = R.nn.conv2d(x, d, padding=[1, 1, 1, 1], groups=8, data_layout="NHWC",
                            kernel_layout="HWOI", out_dtype="int32")
            out = (y, z)
            R.output(out)
        return out


def test_reduce_last_weights_pass():
    """Before/Expected: a groups=1 HWIO conv gets OHWI weights, a depthwise one is kept."""
    import tvm

    from compile.backends.cortexm.intrin import ReduceLastWeights

    tvm.ir.assert_structural_equal(ReduceLastWeights(ConvHWIO), ConvOHWI)


def test_chained_requantizations_take_the_careful_schedule(tmp_path):
    """conv -> quantized SUB -> quantized ADD inlined into one expression is deeper than
    MAX_EXPR_DEPTH (TVM's simplifier took 73 s over it): such a kernel is scheduled with only
    read-once producers inlined, and every kernel lowers to expressions within the limit.
    TVM's own convolution kernels (``library=False``), as for a conv the library leaves."""
    import tvm

    from compile.backends.cortexm.graph import (MAX_EXPR_DEPTH, lower_kernel, max_expr_depth,
                                       relax_passes, schedule_kernel)
    from compile.difftest.convert import to_tflite

    case = json.loads((REPO / "tests/difftest_cases/seed1-mps2-an386-slow.json").read_text())
    mod = compile_model(to_tflite(case["spec"], tmp_path / "chain.tflite"))[0]
    with tvm.transform.PassContext(opt_level=3):
        fused = relax_passes(library=False)(mod)
    prims = [f for f in fused.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert max(max_expr_depth(schedule_kernel(f)) for f in prims) > MAX_EXPR_DEPTH
    assert max(max_expr_depth(lower_kernel(f)[0]) for f in prims) <= MAX_EXPR_DEPTH


@I.ir_module
class SharedNames:
    @R.function
    def main(x: R.Tensor((1, 4), "int8")):
        with R.dataflow():
            lv = R.add(x, x)
            lv_1 = R.multiply(lv, x)
            R.output(lv_1)
        return lv_1


def test_unique_var_names_pass():
    """Before/Expected up to names (structural equality maps variables by their bindings):
    the pass changes nothing but the names, and every variable gets one of its own."""
    import tvm
    from tvm import relax

    from compile.backends.cortexm.graph import UniqueVarNames

    after = UniqueVarNames(SharedNames)
    tvm.ir.assert_structural_equal(after, SharedNames)
    names = []
    relax.analysis.post_order_visit(after["main"], lambda e: names.append(e.name)
                                    if isinstance(e, relax.Var) else None)
    assert sorted(set(names)) == ["v1", "v2", "v3"]
