"""The Cortex-M kernel library (firmware/sg_nn.h) and the pass that calls it
(compile/backends/cortexm/nnlib.py): the pass replaces exactly the quantized convolution
chains it can prove equal, the kernels match TFLite's reference arithmetic (numpy, with
LiteRT's MultiplyByQuantizedMultiplier) on random shapes with odd channel counts, -128,
strides 1 and 2, padding on every side, and their scratch sizes are exact; on the host's C
path and on the three QEMU boards (SMLAD / SMMULR / Helium paths)."""
import re
import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from compile.backends.cortexm import nnlib, project
from compile.backends.cortexm.graph import lower_model
from compile.lower.fixedpoint import iconst, requantize_output
from compile.lower.quant import np_multiply_by_quantized_multiplier
from compile.paths import REPO
from compile.pipeline import compile_model
from compile.targets import get_target
from tests.factory import build_tflite

INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1


# -- the pass: Before / Expected ------------------------------------------------------------
def _conv_module(reals, w_hwio, bias, zx=0, pad=(0, 0, 0, 0), groups=1, zy=3, lo=-128, hi=127):
    """main(x) = the integer lowering's chain for one convolution (compile/lower/conv.py)."""
    c = w_hwio.shape[2]
    x = relax.Var("x", relax.TensorType((1, 6, 6, c), "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            data = x
            if zx:
                data = bb.emit(R.nn.pad(x, [0, 0, pad[0], pad[2], pad[1], pad[3], 0, 0],
                                        pad_value=float(zx)))
                pad = (0, 0, 0, 0)
            layout = "HWIO" if groups == 1 else "HWOI"
            acc = bb.emit(R.nn.conv2d(data, iconst(w_hwio, "int8"), padding=list(pad),
                                      groups=groups, data_layout="NHWC", kernel_layout=layout,
                                      out_dtype="int32"))
            acc = bb.emit(R.add(acc, iconst(bias, "int32")))
            out = bb.emit_output(bb.normalize(requantize_output(acc, reals, zy, lo, hi)))
        bb.emit_func_output(out)
    return relax.transform.Normalize()(bb.get())


def _offload(mod):
    """The pass, then dead-code elimination (the chain it replaced stays behind unused)."""
    return relax.transform.DeadCodeElimination()(nnlib.OffloadConvolutions(mod))


def _calls(mod):
    main = mod["main"]
    return [b.value for blk in main.body.blocks for b in blk.bindings
            if isinstance(b.value, relax.Call)]


def test_offload_pass_before_expected():
    """Before: pad -> conv2d -> bias -> requantization chain -> int8.  Expected: one
    call_tir of a PrimFunc with sg.nn = conv, the layer's shape and fast flag, and the
    constants as the kernel reads them (OHWI weights, int32 bias / multiplier / shift)."""
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (3, 3, 5, 4)).astype(np.int8)              # HWIO
    bias = rng.integers(-500, 500, 4).astype(np.int32)
    reals = np.array([0.01, 0.002, 0.3, 0.0007])
    before = _conv_module(reals, w, bias, zx=-7, pad=(1, 1, 1, 1))
    after = _offload(before)
    calls = _calls(after)
    assert len(calls) == 1 and calls[0].op.name == "relax.call_tir"
    prim = after[calls[0].args[0]]
    assert str(prim.attrs["sg.nn"]) == "conv"
    shape = dict(zip(nnlib.SHAPE_FIELDS, (int(v) for v in prim.attrs["sg.shape"])))
    assert shape == dict(ih=6, iw=6, c=5, oh=6, ow=6, o=4, kh=3, kw=3, sh=1, sw=1, pt=1,
                         pl=1, zx=-7, zy=3, lo=-128, hi=127, cb=1, rows=0, fast=1, widen=1)
    x, wt, b, m, r = calls[0].args[1].fields
    assert isinstance(x, relax.Var)
    np.testing.assert_array_equal(wt.value.numpy(), np.transpose(w, (3, 0, 1, 2)))
    np.testing.assert_array_equal(b.value.numpy(), bias)
    assert m.value.numpy().dtype == np.int32 and np.all(m.value.numpy() >= 2 ** 30)
    # the multiplier and shift reproduce TFLite's QuantizeMultiplier of each scale
    from compile.lower.quant import quantize_multipliers
    mult, shift = quantize_multipliers(reals)
    np.testing.assert_array_equal(m.value.numpy(), mult)
    np.testing.assert_array_equal(r.value.numpy(), -shift)      # all channels fast: no + 256
    assert int(prim.attrs["sg.scratch"]) == 92 + 4 * 45   # windows (2 x 45 B, 4-aligned), widened


def test_offload_pass_depthwise_weights_channel_major():
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (3, 3, 6, 1)).astype(np.int8)              # HWOI
    after = _offload(_conv_module(np.full(6, 0.01), w, np.zeros(6, np.int32),
                                                   pad=(1, 1, 1, 1), groups=6))
    call = _calls(after)[0]
    assert str(after[call.args[0]].attrs["sg.nn"]) == "dwconv"
    np.testing.assert_array_equal(call.args[1].fields[1].value.numpy(),
                                  np.transpose(w[:, :, :, 0], (2, 0, 1)))


def test_offload_pass_leaves_left_shift_multipliers_to_tvm():
    """A scale >= 1 gives a multiplier with a left shift (wider than int32): the chain
    stays as it is, and TVM's kernel computes it."""
    w = np.ones((1, 1, 4, 2), np.int8)
    before = _conv_module(np.array([1.5, 0.01]), w, np.zeros(2, np.int32))
    after = _offload(before)
    assert not [c for c in _calls(after) if c.op.name == "relax.call_tir"]
    tvm.ir.assert_structural_equal(after["main"], before["main"])


def test_models_call_the_library(tmp_path):
    """Every convolution of the registry's small models goes to the library, the weights
    take their int8 size, and the memory plan still overlaps outputs with their inputs."""
    for name in ("small_cnn", "identity_block"):
        mod = compile_model(build_tflite(name, tmp_path))[0]
        n_conv = sum(1 for c in _calls(mod) if c.op.name == "relax.nn.conv2d")
        graph = lower_model(mod)
        sources = "\n".join(k.source for k in graph.kernels.values())
        assert len(re.findall(r"sg_(?:dw)?conv_s8\(&s", sources)) == n_conv
        assert "conv2d" not in " ".join(graph.kernels)


# -- the kernels against numpy --------------------------------------------------------------
def reference(layer: nnlib.ConvLayer, x: np.ndarray) -> np.ndarray:
    """TFLite's reference: int32 accumulation over the window, padded taps = zx, then
    MultiplyByQuantizedMultiplier(acc, m, -rs) + zy clamped."""
    s = layer.shape
    rows = (s["oh"] - 1) * s["sh"] + s["kh"]
    cols = (s["ow"] - 1) * s["sw"] + s["kw"]
    xp = np.full((max(rows, s["pt"] + s["ih"]), max(cols, s["pl"] + s["iw"]), s["c"]),
                 s["zx"], np.int64)
    xp[s["pt"]:s["pt"] + s["ih"], s["pl"]:s["pl"] + s["iw"]] = x.reshape(s["ih"], s["iw"], -1)
    acc = np.zeros((s["oh"], s["ow"], s["o"]), np.int64)
    w = layer.weights.astype(np.int64)
    for oy in range(s["oh"]):
        for ox in range(s["ow"]):
            win = xp[oy * s["sh"]:oy * s["sh"] + s["kh"], ox * s["sw"]:ox * s["sw"] + s["kw"]]
            if layer.kind == "conv":
                acc[oy, ox] = np.einsum("hwc,ohwc->o", win, w)
            else:
                acc[oy, ox] = np.einsum("hwc,chw->c", win, w)
    acc += layer.bias
    y = np_multiply_by_quantized_multiplier(acc, layer.mult.astype(np.int64),
                                            -(layer.rshift.astype(np.int64) & 255)) + s["zy"]
    return np.clip(y, s["lo"], s["hi"]).astype(np.int8)


def _layer(rng, kind, ih, iw, c, o, k, stride, pad, fast=True, zx=None, clamp="relu",
           blocks=None) -> nnlib.ConvLayer:
    oh = (ih + 2 * pad - k) // stride + 1 if pad else -(-(ih - k + 1) // stride)
    ow = (iw + 2 * pad - k) // stride + 1 if pad else -(-(iw - k + 1) // stride)
    if not pad and stride == 2 and ih % 2 == 0:      # TFLite SAME, stride 2: pad below/right
        oh, ow = ih // 2, iw // 2
    n = o if kind == "conv" else c
    w = rng.integers(-128, 128, (o, k, k, c) if kind == "conv" else (c, k, k), dtype=np.int64)
    w.reshape(-1)[:3] = -128
    bias = rng.integers(-2 ** 14, 2 ** 14, n)
    mult = rng.integers(2 ** 30, 2 ** 31, n)
    mult[0] = 2 ** 31 - 1
    rshift = rng.integers(1, 12, n)
    if not fast:
        rshift[-1] = 0                                  # a channel without right shift
        bias[0] = 2 ** 30                               # and an accumulator past 2^30
    zy = int(rng.integers(-20, 20))
    lo, hi = {"none": (-128, 127), "relu": (zy, 127), "relu6": (zy, zy + 50)}[clamp]
    shape = dict(ih=ih, iw=iw, c=c, oh=oh, ow=ow, o=n, kh=k, kw=k, sh=stride, sw=stride,
                 pt=pad, pl=pad, zx=int(rng.integers(-128, 128)) if zx is None else zx,
                 zy=zy, lo=lo, hi=hi, cb=1, rows=0, widen=int(kind == "conv" and k * k * c >= 16))
    if kind == "dwconv" and nnlib.band_window(shape):
        shape["cb"], shape["rows"] = blocks or nnlib.plane_blocks(shape)
    quick = nnlib.fast_channels(w, bias, rshift)
    shape["fast"] = int(quick.all())
    assert shape["fast"] == int(fast) and quick.any()
    return nnlib.ConvLayer(kind, shape, w.astype(np.int8), bias.astype(np.int32),
                           mult.astype(np.int32), (rshift + 256 * ~quick).astype(np.int32))


def kernel_cases(seed: int = 7) -> list[tuple[nnlib.ConvLayer, np.ndarray]]:
    rng = np.random.default_rng(seed)
    specs = [
        ("conv", 5, 5, 7, 5, 1, 1, 0, True, None, "relu"),     # 1x1, odd K, odd O, odd pixels
        ("conv", 5, 5, 12, 7, 1, 1, 0, True, None, "relu6"),   # K = 12: the asm pairs, odd O
        ("conv", 6, 5, 8, 6, 1, 2, 0, True, None, "none"),     # 1x1 stride 2
        ("conv", 5, 6, 3, 4, 3, 1, 1, True, -128, "relu6"),    # 3x3 padded, K = 27
        ("conv", 8, 8, 16, 3, 3, 2, 0, False, None, "relu"),   # stride 2, pad below/right
        ("conv", 7, 7, 1, 2, 5, 1, 2, True, None, "none"),     # 5x5, one channel
        ("dwconv", 6, 6, 5, 5, 3, 1, 1, True, None, "relu"),
        ("dwconv", 8, 8, 7, 7, 3, 2, 0, True, -128, "relu6"),  # stride 2, pad below/right
        ("dwconv", 9, 9, 3, 3, 3, 2, 0, False, None, "none"),  # stride 2, valid, odd width
        ("dwconv", 3, 5, 4, 4, 3, 1, 1, True, None, "relu"),   # odd output width
        ("dwconv", 7, 6, 4, 4, 5, 1, 2, False, None, "relu"),  # 5x5: the plain loop
    ]
    cases = []
    for kind, ih, iw, c, o, k, st, pad, fast, zx, clamp in specs:
        layer = _layer(rng, kind, ih, iw, c, o, k, st, pad, fast, zx, clamp)
        x = rng.integers(-128, 128, (ih, iw, c)).astype(np.int8)
        x.reshape(-1)[::5] = -128
        cases.append((layer, x))
    # several channels per plane block, the last block shorter; bands of output rows, the
    # last band shorter, stride 1 and 2
    for shape, blocks, st in (((6, 6, 5), (2, 8), 1), ((9, 7, 3), (1, 5), 1),
                              ((11, 9, 2), (1, 7), 2)):
        layer = _layer(rng, "dwconv", *shape, shape[2], 3, st, 1, True, None, "relu", blocks)
        cases.append((layer, rng.integers(-128, 128, shape).astype(np.int8)))
    # four channels per pass from the NHWC input: padded on every side, stride 2, not fast
    for shape, st, fast, clamp in (((2, 2, 8), 1, True, "relu"), ((5, 4, 12), 2, True, "none"),
                                   ((3, 3, 8), 1, False, "relu6")):
        layer = _layer(rng, "dwconv", *shape, shape[2], 3, st, 1, fast, None, clamp, (4, 0))
        assert nnlib.quad_kernel(layer.shape)
        x = rng.integers(-128, 128, shape).astype(np.int8)
        x.reshape(-1)[::3] = -128
        cases.append((layer, x))
    return cases


def _c_array(ctype: str, values) -> str:
    return "{" + ", ".join("INT32_MIN" if int(v) == INT32_MIN else str(int(v))
                           for v in np.asarray(values).reshape(-1)) + "}"


def check_source(cases) -> str:
    """C source of ``int sg_check(void)``: every case through its kernel, the output
    against numpy's, and 16 canary bytes after the scratch the pass sized; plus the
    requantization at the int32 edges.  Returns the number of wrong bytes."""
    out = ['#include <stdint.h>', '#include <string.h>', '#include "sg_nn.h"']
    calls = []
    scratch = max(layer.scratch_bytes for layer, _ in cases) + 16
    for i, (layer, x) in enumerate(cases):
        s = layer.shape
        fields = ", ".join(f".{f} = {s[f]}" for f in nnlib.SHAPE_FIELDS)
        out += [f"static const sg_conv_shape S{i} = {{{fields}}};",
                f"static const int8_t X{i}[] = {_c_array('int8_t', x)};",
                f"static const int8_t W{i}[] = {_c_array('int8_t', layer.weights)};",
                f"static const int32_t B{i}[] = {_c_array('int32_t', layer.bias)};",
                f"static const int32_t M{i}[] = {_c_array('int32_t', layer.mult)};",
                f"static const int32_t R{i}[] = {_c_array('int32_t', layer.rshift)};",
                f"static const int8_t E{i}[] = {_c_array('int8_t', reference(layer, x))};"]
        fn = "sg_conv_s8" if layer.kind == "conv" else "sg_dwconv_s8"
        ws = f"({'int8_t' if layer.kind == 'conv' else 'int16_t'} *)(void *)ws"
        calls.append(
            f"  memset(ws, 0xa5, sizeof ws);\n"
            f"  {fn}(&S{i}, X{i}, W{i}, B{i}, M{i}, R{i}, y, "
            f"{ws if layer.scratch_bytes else '0'});\n"
            f"  for (unsigned j = 0; j < sizeof E{i}; j++) bad += y[j] != E{i}[j];\n"
            f"  for (unsigned j = {layer.scratch_bytes}; j < {layer.scratch_bytes + 16}; j++)"
            f" bad += ws[j] != 0xa5;")
    # requantization edges: (acc, m, rs) -> MultiplyByQuantizedMultiplier(acc, m, -rs)
    accs = [INT32_MIN, INT32_MAX, -2 ** 30 + 1, 2 ** 30 - 1, -1, 0, 1, 12345, -54321]
    mults = [2 ** 30, 2 ** 31 - 1, 1518500250]
    edges = [(a, m, r) for a in accs for m in mults for r in (0, 1, 2, 7, 22, 31)]
    rq = [(a, m, r, int(np_multiply_by_quantized_multiplier(a, m, -r))) for a, m, r in edges]
    fast = [(a, m, r, e) for a, m, r, e in rq if abs(a) < 2 ** 30 and 1 <= r <= 22]
    # the asm pairs' requantization (M4/M7, M55): accumulators where h = 0 for one sign and not
    # the other, around powers of two, at the fast form's limits; output = clamp(rq + 5)
    small = [v for e in range(0, 30) for v in (2 ** e - 1, 2 ** e, 2 ** e + 1)]
    paccs = sorted({a for v in small for a in (v, -v)} | {2 ** 30 - 1, -2 ** 30 + 1})
    prq = [(a, m, r, int(np.clip(np_multiply_by_quantized_multiplier(a, m, -r) + 5,
                                 -128, 127)))
           for a in paccs for m in mults for r in (1, 2, 7, 13, 22)]
    out.append("#if SG_NN_WIDEN\n#define SG_NN_PAIRS sg_conv_pairs_w\n"
               "#elif defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)\n"
               "#define SG_NN_PAIRS sg_conv_pairs_mve\n#endif\n")
    out.append("#ifdef SG_NN_PAIRS\nstatic const int32_t RQP[][4] = {" + ", ".join(
        _c_array("int32_t", row) for row in prq) + "};\n#endif")
    out.append("static const int32_t RQ[][4] = {" + ", ".join(
        _c_array("int32_t", row) for row in rq) + "};")
    out.append("static const int32_t RQF[][4] = {" + ", ".join(
        _c_array("int32_t", row) for row in fast) + "};")
    ymax = max(int(np.prod([l.shape["oh"], l.shape["ow"], l.shape["o"]])) for l, _ in cases)
    out.append("int sg_check(void) {\n  int bad = 0;\n"
               f"  static uint8_t ws[{scratch}] __attribute__((aligned(8)));\n"
               f"  static int8_t y[{ymax}];\n" + "\n".join(calls) + "\n"
               "  for (unsigned i = 0; i < sizeof RQ / sizeof RQ[0]; i++)\n"
               "    bad += sg_rq(RQ[i][0], RQ[i][1], RQ[i][2]) != RQ[i][3];\n"
               "  for (unsigned i = 0; i < sizeof RQF / sizeof RQF[0]; i++) {\n"
               "    sg_rqc c = sg_rq_channel(RQF[i][1], RQF[i][2], 5, 1);\n"
               "    bad += sg_rq_val(RQF[i][0], c, 1) != RQF[i][3] + 5;\n  }\n"
               "#ifdef SG_NN_PAIRS\n"
               "  for (unsigned i = 0; i < sizeof RQP / sizeof RQP[0]; i++) {\n"
               "    static const int16_t xw[8];\n    static const int8_t w[8];\n"
               "    const int32_t b[2] = {RQP[i][0], RQP[i][0]}, m[2] = {RQP[i][1], RQP[i][1]};\n"
               "    const int32_t r[2] = {RQP[i][2], RQP[i][2]};\n    int8_t o[4];\n"
               "    sg_pairs_w e = sg_pairs_make(xw, 4, 4, w, b, m, r, o, 2, 2, 5, -128, 127);\n"
               "    SG_NN_PAIRS(&e);\n"
               "    for (int j = 0; j < 4; j++) bad += o[j] != RQP[i][3];\n  }\n"
               "#endif\n"
               "  return bad;\n}\n")
    return "\n".join(out)


def test_kernels_match_reference_on_host(tmp_path):
    """The plain-C path of sg_nn.h, compiled with the host gcc."""
    cases = kernel_cases()
    assert {(l.kind, l.shape["fast"]) for l, _ in cases} == {
        ("conv", 0), ("conv", 1), ("dwconv", 0), ("dwconv", 1)}
    (tmp_path / "check.c").write_text(check_source(cases) +
                                      "int main(void) { return sg_check(); }\n")
    subprocess.run(["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fwrapv",
                    f"-I{REPO / 'firmware'}", "-o", str(tmp_path / "check"),
                    str(tmp_path / "check.c")], check=True)
    assert subprocess.run([str(tmp_path / "check")]).returncode == 0


@pytest.mark.emulator
def test_kernels_match_reference_on_qemu_boards(tmp_path):
    """The SMLAD / SMMULR path (M4, M7) and the Helium dot products (M55), on the QEMU
    boards; the disassembly shows the instructions each core was meant to use."""
    graph = lower_model(compile_model(build_tflite("small_cnn", tmp_path))[0])
    source = check_source(kernel_cases(seed=11))
    expected = {"mps2-an386": ([], [r"smlad", r"smmulr", r"sel"]),
                "mps2-an500": ([], [r"smlad", r"smmulr", r"sel"]),
                "mps3-an547": (["-m", "armv8.1-m.main"], [r"vmlava\w*\.s8"])}
    for board, (options, insns) in expected.items():
        target = get_target(board)
        proj = tmp_path / board
        proj.mkdir()
        project.write_project(graph, target, proj, np.zeros((1, 16, 16, 1), np.int8))
        (proj / "main.c").write_text(source + '#include "board.h"\nint main(void) {\n'
                                     "  board_init();\n  return sg_check();\n}\n")
        project.make_firmware(proj, target)
        dis = subprocess.run(["arm-none-eabi-objdump", "-d", *options,
                              str(proj / "build/firmware.elf")],
                             capture_output=True, text=True, check=True).stdout
        for insn in insns:
            assert re.search(rf"\s{insn}\s", dis), (board, insn)
        proc = subprocess.run([*target["run"]["command"], "-kernel",
                               str(proj / "build/firmware.elf")], timeout=120)
        assert proc.returncode == 0, board
