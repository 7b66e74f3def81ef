"""Static entry point: a model's memory-planned Relax ``main`` as one C function.

The Relax VM runs ``main`` (even compiled to native code, ``exec_mode="compiled"``) as runtime
calls: per inference it allocates every storage block and builds a ``Tensor`` object for every
intermediate (``vm.builtin.alloc_storage``/``alloc_tensor``), packs every kernel's arguments
one runtime call each (``TVMBackendAnyListSetPackedArg``) and frees them again
(``kill_object``).  For MobileNeXt-mcu (105 kernel calls, 0.12 ms on the host) that costs
microseconds -- as much as the margin to LiteRT.

After ``StaticPlanBlockMemory`` nothing in ``main`` is dynamic: fixed storage sizes, tensors at
fixed offsets, a fixed sequence of kernel calls.  ``plan`` reads that sequence; ``c_source``
writes it as C -- static storage, static ``DLTensor``s and argument arrays, one direct call of
each kernel's entry point (``__tvm_ffi_<kernel>``, the symbols the LLVM build exports) -- the
shape of TVM's AOT executor (removed in v0.19), here for the CPU targets' shared library.
The function is exported as ``sandglass_main(input, output)``:
``lib.get_function("sandglass_main", True)`` on the loaded library.

It runs one inference at a time (its storage is static, like a TFLite interpreter's arena).
The Relax VM's ``main`` stays in the same library and gives the same output.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

ENTRY = "sandglass_main"
ALIGN = 64
# relax ops / VM builtins of a planned main that need nothing at run time here
_IGNORED_OPS = {"relax.null_value", "relax.vm.kill_object", "relax.memory.kill_storage",
                "relax.memory.kill_tensor"}
_IGNORED_EXTERN = {"vm.builtin.check_tensor_info", "vm.builtin.match_shape"}
_DL_CODES = {"int": 0, "uint": 1, "float": 2}


class StaticMainError(ValueError):
    """``main`` holds something the static entry point does not do (dynamic shapes, ...)."""


@dataclass(frozen=True)
class TensorRef:
    """Where a tensor lives: ``input``, ``const`` (index into ``Plan.consts``) or ``storage``
    (index into ``Plan.storages``), at a byte offset."""
    kind: str
    index: int
    offset: int
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Plan:
    """The static program: storages (bytes), constants, kernel calls, input and output."""
    storages: list[int] = field(default_factory=list)
    consts: list[np.ndarray] = field(default_factory=list)
    calls: list[tuple[str, list[TensorRef]]] = field(default_factory=list)
    input: TensorRef | None = None
    output: TensorRef | None = None


def _static_shape(expr) -> tuple[int, ...]:
    values = expr.values if isinstance(expr, relax.ShapeExpr) else None
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        raise StaticMainError(f"main has a non-static shape: {expr}")
    return tuple(int(v) for v in values)


def _tensor_type(var) -> tuple[tuple[int, ...], str]:
    ty = var.ty
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        raise StaticMainError(f"{var} is not a tensor of static shape")
    return _static_shape(ty.shape), str(ty.dtype)


def _int(expr) -> int:
    """A Relax PrimValue / TIR IntImm argument as an int."""
    return int(getattr(expr, "value", expr))


def plan(func: relax.Function) -> Plan:
    """Read a memory-planned Relax ``main`` (after ``relax.backend.cpu_generic``'s finalize
    passes) into a ``Plan``; StaticMainError for anything that is not static."""
    if len(func.params) != 1:
        raise StaticMainError(f"main takes {len(func.params)} inputs, the static entry one")
    result = Plan()
    shape, dtype = _tensor_type(func.params[0])
    result.input = TensorRef("input", 0, 0, shape, dtype)
    values: dict = {func.params[0]: result.input}     # relax.Var -> TensorRef or storage index
    consts: dict = {}

    def operand(arg) -> TensorRef:
        if isinstance(arg, tvm.ir.expr.GenericConst):
            if arg not in consts:
                consts[arg] = len(result.consts)
                result.consts.append(arg.value.numpy())
            data = result.consts[consts[arg]]
            return TensorRef("const", consts[arg], 0, data.shape, str(data.dtype))
        ref = values.get(arg)
        if not isinstance(ref, TensorRef):
            raise StaticMainError(f"kernel argument {arg} is not a planned tensor")
        return ref

    body = func.body
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise StaticMainError(f"main has a {type(binding).__name__}")
            var, value = binding.var, binding.value
            if isinstance(value, relax.Var) and value in values:
                values[var] = values[value]
                continue
            if isinstance(value, relax.Tuple):     # e.g. a split's outputs, bound together
                values[var] = tuple(values.get(f) for f in value.fields)
                continue
            if isinstance(value, relax.TupleGetItem) and isinstance(
                    values.get(value.tuple_value), tuple):
                values[var] = values[value.tuple_value][value.index]
                continue
            if not isinstance(value, relax.Call):
                raise StaticMainError(f"main binds a {type(value).__name__}")
            op = value.op
            if isinstance(op, relax.ExternFunc) and op.global_symbol in _IGNORED_EXTERN:
                continue
            if isinstance(op, relax.ExternFunc) and op.global_symbol == "vm.builtin.reshape":
                src = operand(value.args[0])
                values[var] = TensorRef(src.kind, src.index, src.offset,
                                        _static_shape(value.args[1]), src.dtype)
                continue
            if isinstance(op, tvm.ir.Op) and op.name in _IGNORED_OPS:
                continue
            if isinstance(op, tvm.ir.Op) and op.name == "relax.vm.alloc_storage":
                (nbytes,) = _static_shape(value.args[0])
                values[var] = len(result.storages)
                result.storages.append(nbytes)
            elif isinstance(op, tvm.ir.Op) and op.name == "relax.vm.alloc_tensor":
                storage = values.get(value.args[0])
                if not isinstance(storage, int):
                    raise StaticMainError(f"{var} is not in a planned storage")
                shape, dtype = _tensor_type(var)
                values[var] = TensorRef("storage", storage, _int(value.args[1]),
                                        shape, dtype)
            elif isinstance(op, tvm.ir.Op) and op.name == "relax.builtin.alloc_tensor":
                shape, dtype = _tensor_type(var)
                values[var] = TensorRef("storage", len(result.storages), 0, shape, dtype)
                result.storages.append(int(np.prod(shape)) * np.dtype(dtype).itemsize)
            elif isinstance(op, relax.GlobalVar):
                result.calls.append((op.name_hint, [operand(a) for a in value.args]))
            else:
                raise StaticMainError(f"main calls {op}, which the static entry does not do")
    out = values.get(body.body)
    if not isinstance(out, TensorRef) or out.kind != "storage":
        raise StaticMainError("main does not return one computed tensor")
    result.output = out
    return result


def const_blob(consts: list[np.ndarray]) -> tuple[bytes, list[int]]:
    """All constants in one byte string, each at an ``ALIGN``-byte offset; and the offsets."""
    blob, offsets = bytearray(), []
    for data in consts:
        blob.extend(b"\0" * (-len(blob) % ALIGN))
        offsets.append(len(blob))
        blob.extend(np.ascontiguousarray(data).tobytes())
    return bytes(blob), offsets


def _dl_dtype(dtype: str) -> tuple[int, int, int]:
    """DLPack's (code, bits, lanes) of a dtype string."""
    t = tvm.DataType(dtype)
    return _DL_CODES[str(dtype).rstrip("0123456789x")], t.bits, t.lanes


def c_source(p: Plan, blob_path: str, const_offsets: list[int], entry: str = ENTRY) -> str:
    """The C translation unit of the static entry point (constants ``.incbin``-ed from
    ``blob_path``)."""
    lines = ["/* generated by compile/llvm_cpu/static_main.py: static entry point of one model */",
             "#include <stdint.h>", "#include <string.h>", "#include <tvm/ffi/c_api.h>", "",
             f'__asm__(".section .rodata\\n.balign {ALIGN}\\nsg_consts:\\n'
             f'.incbin \\"{blob_path}\\"\\n.previous");',
             "extern const uint8_t sg_consts[] __asm__(\"sg_consts\");", ""]
    for i, nbytes in enumerate(p.storages):
        lines.append(f"static uint8_t sg_storage{i}[{max(nbytes, 1)}] "
                     f"__attribute__((aligned({ALIGN})));")
    tensors: dict[TensorRef, str] = {}

    def tensor(ref: TensorRef) -> str:
        if ref in tensors:
            return tensors[ref]
        name = f"sg_t{len(tensors)}"
        tensors[ref] = name
        if ref.kind == "const":
            data = f"(void*)(sg_consts + {const_offsets[ref.index] + ref.offset})"
        elif ref.kind == "storage":
            data = f"sg_storage{ref.index} + {ref.offset}"
        else:   # the input: its caller's data pointer, set at every call
            data = "0"
        lines.append(f"static int64_t {name}_shape[] = {{{', '.join(map(str, ref.shape))}}};")
        dtype = "{%d, %d, %d}" % _dl_dtype(ref.dtype)
        lines.append(f"static DLTensor {name} = {{{data}, {{kDLCPU, 0}}, {len(ref.shape)}, "
                     f"{dtype}, {name}_shape, 0, 0}};")
        return name

    tensor(p.input)
    calls = []
    for i, (kernel, args) in enumerate(p.calls):
        names = [tensor(a) for a in args]
        items = ", ".join(f"{{.type_index = kTVMFFIDLTensorPtr, .v_ptr = &{n}}}" for n in names)
        lines.append(f"static const TVMFFIAny sg_args{i}[] = {{{items}}};")
        calls.append((kernel, i, len(names)))
    lines.append("")
    for kernel in sorted({k for k, _, _ in calls}):
        lines.append(f"int __tvm_ffi_{kernel}(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);")
    out, inp = p.output, p.input
    out_bytes = int(np.prod(out.shape)) * np.dtype(out.dtype).itemsize

    def check(var: str, ref: TensorRef, what: str) -> list[str]:
        shape = ", ".join(map(str, ref.shape))
        code, bits, lanes = _dl_dtype(ref.dtype)
        cond = [f"{var}->ndim != {len(ref.shape)}", f"{var}->device.device_type != kDLCPU",
                f"{var}->dtype.code != {code}", f"{var}->dtype.bits != {bits}",
                f"{var}->dtype.lanes != {lanes}", f"{var}->byte_offset != 0"]
        cond += [f"{var}->shape[{i}] != {n}" for i, n in enumerate(ref.shape)]
        strides = np.cumprod((1, *ref.shape[:0:-1]))[::-1]     # row-major, in elements
        wrong = [f"{var}->strides[{i}] != {s}" for i, s in enumerate(strides) if ref.shape[i] != 1]
        cond += [f"({var}->strides != 0 && ({' || '.join(wrong) or '0'}))"]
        msg = f"{entry}: {what} must be a compact {ref.dtype}[{shape}] tensor on the CPU"
        return [f"  if ({var} == 0 || {' || '.join(cond)}) {{",
                f'    TVMFFIErrorSetRaisedFromCStr("ValueError", "{msg}");', "    return -1;",
                "  }"]

    lines += ["", "static DLTensor* sg_tensor(const TVMFFIAny* a) {",
              "  if (a->type_index == kTVMFFIDLTensorPtr) return (DLTensor*)a->v_ptr;",
              "  if (a->type_index == kTVMFFITensor)",
              "    return (DLTensor*)((char*)a->v_obj + sizeof(TVMFFIObject));",
              "  return 0;", "}", "",
              f"int __tvm_ffi_{entry}(void* self, const TVMFFIAny* args, int32_t num_args, "
              "TVMFFIAny* result) {",
              "  (void)self;",
              "  if (num_args != 2) {",
              f'    TVMFFIErrorSetRaisedFromCStr("TypeError", "{entry} takes (input, output)");',
              "    return -1;", "  }",
              "  DLTensor* x = sg_tensor(&args[0]);", "  DLTensor* y = sg_tensor(&args[1]);",
              *check("x", inp, "input"), *check("y", out, "output")]
    # the input and every view of it (a reshape of the input is a tensor of its own)
    lines += [f"  {name}.data = (char*)x->data + {ref.offset};" if ref.offset else
              f"  {name}.data = x->data;" for ref, name in tensors.items() if ref.kind == "input"]
    lines += ["  TVMFFIAny ret;"]
    for kernel, i, n in calls:
        lines += ["  ret.type_index = kTVMFFINone; ret.zero_padding = 0; ret.v_int64 = 0;",
                  f"  if (__tvm_ffi_{kernel}(0, sg_args{i}, {n}, &ret) != 0) return -1;"]
    out_ptr = f"sg_storage{out.index} + {out.offset}"
    lines += [f"  memcpy(y->data, {out_ptr}, {out_bytes});",
              "  result->type_index = kTVMFFINone;", "  return 0;", "}", ""]
    return "\n".join(lines)


def compile_object(p: Plan, cc: str, workdir: Path) -> Path:
    """``static_main.o`` for the shared library (``export_library(..., addons=[it])``)."""
    import tvm_ffi.libinfo

    workdir = Path(workdir)
    blob, offsets = const_blob(p.consts)
    (workdir / "static_main_consts.bin").write_bytes(blob)
    source = workdir / "static_main.c"
    source.write_text(c_source(p, str((workdir / "static_main_consts.bin").resolve()), offsets))
    obj = workdir / "static_main.o"
    cmd = [cc, "-O2", "-fPIC", "-std=c11", "-c", str(source), "-o", str(obj),
           "-I", tvm_ffi.libinfo.find_include_path()]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{cc} could not compile the static entry point:\n{done.stderr}")
    return obj


def export_library(built, path: str | Path, cc: str = "gcc", fcompile=None) -> bool:
    """``built.executable.export_library(path)`` with the static entry point of ``built.main``
    (the memory-planned main; ``built``: ``compile.llvm_cpu.pipeline.Built``) linked in;
    without it when that ``main`` is not static (then False)."""
    with tempfile.TemporaryDirectory(prefix="sandglass-static-") as tmp:
        try:
            addons = [str(compile_object(plan(built.main), cc, Path(tmp)))]
        except StaticMainError:
            addons = []
        built.executable.export_library(str(path), fcompile=fcompile, addons=addons)
    return bool(addons)


def entry_point(lib: tvm.runtime.Module):
    """``sandglass_main(input, output)`` of a loaded library (None when it has none)."""
    return lib.get_function(ENTRY, True) if lib.implements_function(ENTRY, True) else None


def load_main(lib: tvm.runtime.Module, out_shape, out_dtype):
    """One inference of a loaded library as ``f(x) -> y``: its static entry point (writing into
    one output tensor it keeps), or the Relax VM's ``main`` for a library without one."""
    entry = entry_point(lib)
    if entry is None:
        return relax.VirtualMachine(lib, tvm.cpu())["main"]
    y = tvm.runtime.empty(tuple(out_shape), str(out_dtype))

    def call(x):
        entry(x, y)
        return y
    return call


def host_entry(built, out_shape, out_dtype):
    """``load_main`` of a host build exported with its static entry point to a temporary
    ``.so``, and the loaded library (its VM ``main`` too)."""
    with tempfile.TemporaryDirectory(prefix="sandglass-static-") as tmp:
        export_library(built, Path(tmp) / "model.so")
        lib = tvm.runtime.load_module(str(Path(tmp) / "model.so"))
    return load_main(lib, out_shape, out_dtype), lib
