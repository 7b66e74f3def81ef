"""Static entry point (compile/llvm_cpu/static_main.py): the memory-planned Relax main as one C function
calling the kernels on static storage -- bit-exact with LiteRT's reference kernels for every test
model, the same program as the VM's main, and strict about its arguments."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

import factory
from compile.llvm_cpu import static_main
from compile.pipeline import compile_model
from compile.measure import run_litert
from compile.targets import get_target, resolve_native
from compile.llvm_cpu.pipeline import compile_relax_module

HOST = tvm.target.Target(resolve_native(get_target("host").tvm))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("static_models")


def _build(path):
    mod, info = compile_model(path)
    built = compile_relax_module(mod, HOST)
    entry, lib = static_main.host_entry(built, info.output.shape,
                                        info.output.dtype)
    return built.main, entry, lib


@pytest.mark.parametrize("name", factory.model_names())
def test_static_entry_is_bit_exact_with_litert(model_dir, name):
    path = factory.build_tflite(name, model_dir)
    _, entry, lib = _build(path)
    vm_main = relax.VirtualMachine(lib, tvm.cpu())["main"]
    x = factory.random_int8_inputs(path, 6, seed=5)
    ours, vm = [], []
    for sample in x:
        arg = tvm.runtime.tensor(np.ascontiguousarray(sample[None]))
        ours.append(entry(arg).numpy()[0].copy())
        vm.append(vm_main(arg).numpy()[0])
    np.testing.assert_array_equal(np.stack(ours), run_litert(path, x))
    np.testing.assert_array_equal(np.stack(ours), np.stack(vm))


def test_plan_follows_the_planned_main(model_dir):
    """The plan's calls are main's kernel calls in order, its storages main's alloc_storage
    sizes; the C calls each kernel directly, with nothing of the VM left."""
    func, _, _ = _build(factory.build_tflite("identity_block", model_dir))
    text = func.script()
    plan = static_main.plan(func)
    assert [k for k, _ in plan.calls] == re.findall(r"^    (\w+)\(", text, re.M)
    assert plan.storages == [int(n) for n in re.findall(r"alloc_storage\(R.shape\(\[(\d+)\]", text)]
    assert plan.input.kind == "input" and plan.output.kind == "storage"
    assert all(a.kind in ("input", "const", "storage") for _, args in plan.calls for a in args)
    blob, offsets = static_main.const_blob(plan.consts)
    assert all(o % static_main.ALIGN == 0 for o in offsets)
    for data, off in zip(plan.consts, offsets):
        assert blob[off:off + data.nbytes] == data.tobytes()
    source = static_main.c_source(plan, "consts.bin", offsets)
    assert "vm." not in source and "alloc" not in source
    called = re.findall(r"if \(__tvm_ffi_(\w+)\(0, sg_args\d+", source)
    assert called == [k for k, _ in plan.calls]
    assert len(re.findall(r"^static uint8_t sg_storage", source, re.M)) == len(plan.storages)


def test_entry_rejects_wrong_arguments(model_dir):
    path = factory.build_tflite("small_cnn", model_dir)
    func, entry, lib = _build(path)
    plan = static_main.plan(func)
    run = static_main.entry_point(lib)
    x = tvm.runtime.tensor(factory.random_int8_inputs(path, 1))
    y = tvm.runtime.empty(plan.output.shape, plan.output.dtype)
    run(x, y)
    bad_x = tvm.runtime.tensor(np.zeros((1, 3, *plan.input.shape[2:]), np.int8))
    bad_dtype = tvm.runtime.tensor(np.zeros(plan.input.shape, np.float32))
    bad_y = tvm.runtime.empty((1, *plan.output.shape), plan.output.dtype)
    for args, words in (((bad_x, y), "input must be"), ((bad_dtype, y), "input must be"),
                        ((x, bad_y), "output must be"), ((x,), "takes (input, output)")):
        with pytest.raises((ValueError, TypeError), match=re.escape(words)):
            run(*args)


def test_plan_refuses_what_is_not_static():
    @R.function
    def dynamic(x: R.Tensor(("n", 4), "int8")) -> R.Tensor(("n", 4), "int8"):
        return x

    with pytest.raises(static_main.StaticMainError, match="static shape"):
        static_main.plan(dynamic)

    @R.function
    def two_inputs(x: R.Tensor((4,), "int8"), y: R.Tensor((4,), "int8")) -> R.Tensor((4,), "int8"):
        return x

    with pytest.raises(static_main.StaticMainError, match="2 inputs"):
        static_main.plan(two_inputs)


def test_a_main_that_is_not_static_keeps_the_vm():
    """A planned main the static entry cannot express (here: returning its input) is exported
    without ``sandglass_main``; ``host_entry`` then runs the Relax VM's main."""
    @tvm.script.ir_module
    class Passthrough:
        @R.function
        def main(x: R.Tensor((1, 4), "int8")) -> R.Tensor((1, 4), "int8"):
            return x

    built = compile_relax_module(Passthrough, HOST)
    with pytest.raises(static_main.StaticMainError, match="one computed tensor"):
        static_main.plan(built.main)
    run, lib = static_main.host_entry(built, (1, 4), "int8")
    assert static_main.entry_point(lib) is None
    x = np.arange(4, dtype=np.int8)[None]
    np.testing.assert_array_equal(run(tvm.runtime.tensor(x)).numpy(), x)
