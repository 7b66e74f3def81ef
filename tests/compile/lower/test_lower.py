"""End-to-end integer lowering: small int8 TFLite models -> compile.lower -> host LLVM -> outputs
bit-identical with LiteRT's reference kernels (OpResolverType.BUILTIN_REF) on random inputs."""

import numpy as np
import pytest
import tvm
from tvm import relax

import factory
from compile.lower import lower_tflite
from compile.lower.quant import np_multiply_by_quantized_multiplier, quantize_multiplier
from compile.measure import run_litert

N_INPUTS = 24

# (model name, build options) of every end-to-end case
CASES = [(name, {}) for name in factory.model_names()] + [
    ("conv", {"per_channel": False}),
    ("depthwise", {"per_channel": False}),
    ("dense", {"per_channel": False}),
    ("small_cnn", {"per_channel": False}),
]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lower_models")


def _case_id(case):
    name, opts = case
    return name + ("_per_tensor" if opts.get("per_channel") is False else "")


def float_values(func) -> list[str]:
    """Every float-typed expression (parameters, bindings, constants, calls) and every float
    immediate (e.g. clip bounds) in a Relax function."""
    found = []

    def visit(expr):
        ty = getattr(expr, "ty", None)
        if isinstance(ty, relax.TensorType) and str(ty.dtype).startswith(("float", "bf")):
            found.append(str(expr)[:60])
        elif isinstance(expr, tvm.tirx.FloatImm):
            found.append(str(expr))

    relax.analysis.post_order_visit(func, visit)
    return found


def compile_and_run(mod, inputs: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return np.stack([vm["main"](tvm.runtime.tensor(x[None])).numpy()[0] for x in inputs])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_integer_program_is_bit_exact_with_litert(model_dir, case):
    name, opts = case
    path = factory.build_tflite(name, model_dir, **opts)
    mod = lower_tflite(path)
    assert float_values(mod["main"]) == []
    inputs = factory.random_int8_inputs(path, N_INPUTS, seed=7)
    ours = compile_and_run(mod, inputs)
    ref = run_litert(path, inputs)
    assert ours.dtype == np.int8
    np.testing.assert_array_equal(ours, ref)


def test_float_io_model_keeps_only_boundary_conversions(model_dir):
    path = factory.build_tflite("identity_block", model_dir, float_io=True)
    mod = lower_tflite(path)
    ops, float_ops = [], []

    def visit(e):
        if isinstance(e, relax.Call):
            ops.append(e.op.name)
            if str(e.ty.dtype).startswith("float"):
                float_ops.append(e.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    assert ops.count("relax.quantize") == 1 and "relax.nn.conv2d" in ops
    # the only float computation: the output DEQUANTIZE
    assert float_ops == ["relax.dequantize"]
    inputs = factory.random_int8_inputs(path, 8, seed=3)
    ours = compile_and_run(mod, inputs)
    ref = run_litert(path, inputs)
    # float output of int8 values: dequantized identically when the int8 values agree
    np.testing.assert_array_equal(ours, ref)


def test_quantize_multiplier_matches_tflite_definition():
    assert quantize_multiplier(0.25) == (2**30, -1)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    # q * 2**31 rounds up to 2**31: renormalised to 2**30 with shift + 1
    assert quantize_multiplier(1.0 - 2.0**-40) == (2**30, 1)
    # round half away from zero (std::round), not Python's half-to-even
    m, s = quantize_multiplier(0.5 + 2.0**-32)
    assert (m, s) == (2**30 + 1, 0)


def test_multiply_by_quantized_multiplier_double_rounding():
    m, s = quantize_multiplier(2.0**-7)
    x = np.array([64, -64, 63, -63, 192, -192, 0], np.int64)
    # x / 128, ties away from zero; 63/128 becomes 1 because the high multiply first rounds
    # 63 * 2**30 / 2**31 = 31.5 up to 32, then 32 / 64 is a tie: TFLite's double rounding
    np.testing.assert_array_equal(np_multiply_by_quantized_multiplier(x, m, s),
                                  [1, -1, 1, 0, 2, -2, 0])


def test_round_multiply_double_matches_the_double_reference():
    """LiteRT's reference FULLY_CONNECTED requantizes with round(double(acc) * scale)."""
    from compile.lower.fixedpoint import round_multiply_double

    rng = np.random.default_rng(5)
    scales = rng.uniform(1e-5, 0.9, size=16)
    acc = rng.integers(-(2**24), 2**24, size=(64, 16)).astype(np.int32)
    acc[0] = np.round(0.5 / scales).astype(np.int32) * 3  # near-ties
    x = relax.Var("x", relax.TensorType(acc.shape, "int32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(round_multiply_double(x, scales))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"}))
    ours = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(acc)).numpy()
    product = acc.astype(np.float64) * scales  # what the C++ reference computes
    expected = np.sign(product) * np.floor(np.abs(product) + 0.5)  # std::round
    np.testing.assert_array_equal(ours, expected.astype(np.int32))


def _run_int32(fn, values):
    x = relax.Var("x", relax.TensorType(values.shape, "int32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(fn(x))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(values)).numpy()


def test_round_multiply_double_tiny_scales_round_to_zero():
    """Scales below 2**-32 (a corrupt or absurd model) give 0 for every int32, like the
    double reference, instead of constants the integer simplifier cannot hold."""
    from compile.lower.fixedpoint import round_multiply_double

    acc = np.array([[2**31 - 1, -(2**31), 5, 0]] * 2, np.int32).T.copy()
    got = _run_int32(lambda x: round_multiply_double(x, [1e-45, 2.0**-33]), acc)
    np.testing.assert_array_equal(got, np.zeros_like(acc))


def test_a_left_shift_that_can_overflow_int32_is_refused():
    """MultiplyByQuantizedMultiplier's ``x * (1 << left)`` is int32 arithmetic in TFLite; where
    the values' bound lets it overflow, TFLite's result is undefined and the model refused.
    Inside the bound, the shift folds into the int64 multiplier and matches TFLite."""
    from compile.errors import ModelError
    from compile.lower.fixedpoint import multiply_by_quantized_multiplier

    m, s = quantize_multiplier(2.0**40)           # clamped by QuantizeMultiplier
    assert (m, s) == (2**31 - 1, 30)
    x = np.array([0, 1, -1, 2, -2], np.int32)
    got = _run_int32(lambda v: multiply_by_quantized_multiplier(v, m, s, bound=2), x)
    np.testing.assert_array_equal(got, np_multiply_by_quantized_multiplier(x, m, s))
    with pytest.raises(ModelError, match="multiplies by 2\\^30 .* values up to 3: that overflows"):
        _run_int32(lambda v: multiply_by_quantized_multiplier(v, m, s, bound=3), x)
