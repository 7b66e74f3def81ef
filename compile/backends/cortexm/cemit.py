"""Lowered TIR -> one C function with plain typed-pointer arguments.

TVM 0.27's C codegen (``target.build.c``) only accepts functions that went through
``MakePackedAPI`` (TVM FFI calling convention, needs the TVM runtime headers and error
machinery), and ``MakeUnpackedAPI`` is gone.  The lowered kernels we produce are small
(loops, loads, stores, scalar arithmetic), so we print them ourselves: every buffer
argument becomes ``T *restrict name``, scalars are C99 ``<stdint.h>`` types, and any
allocation inside a kernel is either a tiny local array (register-like accumulators after
scheduling) or a slice of the caller's static workspace (``uint8_t *ws``).

Calls to C helpers (``call_extern``, from ``compile.backends.cortexm.intrin``'s tensor intrinsics)
print as plain calls, ``tvm_access_ptr`` as a pointer into the buffer.  Anything outside
that subset (vector lanes, packed calls, unknown intrinsics) raises ``UnsupportedTIR``
naming the construct.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# TIR dtype -> C type
CTYPES = {
    "bool": "int32_t",
    "int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
    "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t",
    "float32": "float", "float64": "double",
}
# allocations up to this many bytes stay local arrays (accumulators); larger ones go to ws
LOCAL_ALLOC_MAX = 64
WS_ALIGN = 8
# a loop nest whose fully unrolled body is at most this many statements is unrolled
# (``#pragma GCC unroll``): the tiles' accumulator and epilogue loops and a depthwise 3x3
# tile's 9 taps x 4 channels, which the firmware's -O2 keeps as loops.  On the M4,
# mobilenext_mcu_m100 takes 19.5 M instructions and 57 KB of code with a limit of 16, 17.8 M
# and 72 KB with 40
UNROLL_MAX = 40

# TIR binary expression class -> C operator
BINOPS = {
    "Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Mod": "%",
    "EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">=",
    "And": "&&", "Or": "||",
}
# TIR intrinsic call -> (C operator) for binary integer ops
CALL_BINOPS = {
    "shift_right": ">>", "shift_left": "<<", "bitwise_and": "&",
    "bitwise_or": "|", "bitwise_xor": "^",
}
# TIR math intrinsic -> (float32 name, float64 name); only on the float development path
MATH = {
    "round": ("__builtin_nearbyintf", "__builtin_nearbyint"),
    "nearbyint": ("__builtin_nearbyintf", "__builtin_nearbyint"),
    "floor": ("__builtin_floorf", "__builtin_floor"),
    "ceil": ("__builtin_ceilf", "__builtin_ceil"),
    "trunc": ("__builtin_truncf", "__builtin_trunc"),
    "exp": ("__builtin_expf", "__builtin_exp"),
    "sqrt": ("__builtin_sqrtf", "__builtin_sqrt"),
    "fabs": ("__builtin_fabsf", "__builtin_fabs"),
    "tanh": ("__builtin_tanhf", "__builtin_tanh"),
    "log": ("__builtin_logf", "__builtin_log"),
}


def prelude(with_float: bool) -> str:
    """Helpers model.c carries (static inline: unused ones cost nothing); the float ones
    only when a kernel computes in float, so that integer models contain no float at all."""
    types = [(t, c) for t, c in CTYPES.items()
             if t != "bool" and (with_float or not t.startswith("float"))]
    lines = [f"static inline {c} sg_min_{t}({c} a, {c} b) {{ return a < b ? a : b; }}\n"
             f"static inline {c} sg_max_{t}({c} a, {c} b) {{ return a > b ? a : b; }}"
             for t, c in types]
    lines += [f"static inline {c} sg_floordiv_{t}({c} a, {c} b) "
              f"{{ {c} q = a / b; return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q; }}\n"
              f"static inline {c} sg_floormod_{t}({c} a, {c} b) "
              f"{{ {c} r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }}"
              for t, c in types if t.startswith("int")]
    return "\n".join(lines) + "\n"


class UnsupportedTIR(ValueError):
    """A TIR construct the C emitter does not handle."""


@dataclass
class KernelC:
    name: str
    decls: list[tuple[str, str]]        # (pointee C type, name) per pointer parameter (+ ws)
    body: str                           # the C after the signature line
    param_dtypes: list[str]
    written: list[bool]                 # per parameter: the kernel stores into it
    workspace_bytes: int = 0
    uses_float: bool = False
    # parameters that share a name and an element count, read through the first of them:
    # each call must pass them the same tensor (``lower.lower_model`` checks)
    same_tensor: list[tuple[int, ...]] = field(default_factory=list)

    def c_source(self, restrict: bool = True) -> str:
        """The C function; ``restrict=False`` for a call whose input and output overlap (an
        aliased step of the memory plan)."""
        star = " *restrict " if restrict else " *"
        return (f"static void {self.name}({', '.join(t + star + n for t, n in self.decls)}) {{\n"
                + self.body)

    @property
    def source(self) -> str:
        return self.c_source()


def ctype(dtype) -> str:
    dtype = str(dtype)
    if dtype not in CTYPES:
        raise UnsupportedTIR(f"dtype {dtype} (vector lanes or unusual type)")
    return CTYPES[dtype]


def vdtype(v) -> str:
    """dtype of a scalar TIR Var (its type annotation)."""
    ty = v.ty
    return str(ty.dtype) if hasattr(ty, "dtype") else str(ty)


def _ident(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return out if out and not out[0].isdigit() else f"v_{out}"


class _Emitter:
    def __init__(self):
        self.names: list[tuple[object, str]] = []   # (tvm object, C name), looked up by same_as
        self.used: set[str] = set()
        self.lines: list[str] = []
        self.indent = 1
        self.ws_bytes = 0
        self.stored: list[str] = []
        self.float = False
        self.params: list[tuple[object, str]] = []  # (param Var / allocated buffer, C name)
        self.same: set[tuple[str, ...]] = set()     # C names of parameters read as one
        self.widen: dict[str, str] = {}              # C name of a narrowed param -> TIR dtype
        self.pointers: set[str] = set()              # C names passed as tvm_access_ptr
        self.referenced: set[str] = set()

    # -- names ---------------------------------------------------------------------------
    def lookup(self, obj) -> str | None:
        for o, n in self.names:
            if o.same_as(obj):
                return n
        return None

    def bind(self, obj, hint: str) -> str:
        base = _ident(hint)
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        self.names.append((obj, name))
        return name

    def alias(self, obj, name: str) -> None:
        self.names.append((obj, name))

    def var(self, v) -> str:
        name = self.lookup(v)
        if name is None:
            raise UnsupportedTIR(f"free variable {v}")
        return name

    def by_name(self, obj) -> str | None:
        """C name of the parameter or allocation ``obj`` stands for when the lowering passes
        rebuilt it (another object, same name): TVM names fused parameters after Relax
        variables, which need not be unique, so a shared name is told apart by type, and
        one that stays ambiguous is refused rather than guessed."""
        name = str(getattr(obj, "name", ""))
        found = [(o, n) for o, n in self.params if str(getattr(o, "name", "")) == name]
        if len(found) > 1:
            key = _type_key(obj)
            found = [(o, n) for o, n in found if key is not None and _type_key(o) == key]
            if not found:
                raise UnsupportedTIR(f"kernel parameters share the name {name}: none has "
                                     "the type it is read with")
            if len(found) > 1:          # the same variable passed twice: one tensor
                self.same.add(tuple(n for _, n in found))
        return found[0][1] if found else None

    def buf(self, b) -> str:
        name = self.lookup(b) or self.by_name(b)
        if name is None:
            raise UnsupportedTIR(f"buffer {b} used before its declaration")
        self.referenced.add(name)
        return name

    def line(self, text: str) -> None:
        self.lines.append("  " * self.indent + text)

    # -- expressions ---------------------------------------------------------------------
    def index(self, indices) -> str:
        if len(indices) != 1:
            raise UnsupportedTIR("multi-dimensional buffer access (buffer not flattened)")
        return self.expr(indices[0])

    def expr(self, e) -> str:
        kind = type(e).__name__
        dtype = vdtype(e)
        if dtype.startswith("float"):
            self.float = True
        if kind == "IntImm":
            v = int(e.value)
            if dtype == "bool":
                return "1" if v else "0"
            if dtype in ("int64", "uint64"):
                return f"INT64_C({v})" if dtype == "int64" else f"UINT64_C({v})"
            if v == -(2 ** 31):
                return "(-2147483647 - 1)"
            return f"({v})" if v < 0 else (f"{v}u" if dtype.startswith("uint") else str(v))
        if kind == "FloatImm":
            v = float(e.value)
            if math.isinf(v) or math.isnan(v):
                raise UnsupportedTIR(f"non-finite float constant {v}")
            text = repr(float(np.float32(v))) if dtype == "float32" else repr(v)
            return f"({text}f)" if dtype == "float32" else f"({text})"
        if kind == "Var":
            return self.var(e)
        if kind == "Cast":
            return f"(({ctype(dtype)})({self.expr(e.value)}))"
        if dtype == "int64" and kind in ("Mul", "Add"):
            macs = self.macs(e)
            if macs is not None:
                return macs
        if kind == "Max" and dtype == "int32" and type(e.a).__name__ == "Min":
            lo, hi = e.b, e.a.b
            if (type(lo).__name__ == type(hi).__name__ == "IntImm"
                    and (int(lo.value), int(hi.value)) == (-128, 127)):
                return f"sg_sat_s8({self.expr(e.a.a)})"    # SSAT on Arm
        if kind in BINOPS:
            text = f"({self.expr(e.a)} {BINOPS[kind]} {self.expr(e.b)})"
            return self.narrow(text, dtype) if kind in ("Add", "Sub", "Mul") else text
        if kind in ("FloorDiv", "FloorMod"):
            op = "floordiv" if kind == "FloorDiv" else "floormod"
            if dtype.startswith("float"):
                q = f"__builtin_floor{'f' if dtype == 'float32' else ''}"
                a, b = self.expr(e.a), self.expr(e.b)
                return f"{q}({a} / {b})" if op == "floordiv" else f"({a} - {b} * {q}({a} / {b}))"
            ctype(dtype)
            return f"sg_{op}_{dtype}({self.expr(e.a)}, {self.expr(e.b)})"
        if kind in ("Min", "Max"):
            ctype(dtype)
            return f"sg_{kind.lower()}_{dtype}({self.expr(e.a)}, {self.expr(e.b)})"
        if kind == "Not":
            return f"(!{self.expr(e.a)})"
        if kind == "Select":
            return (f"({self.expr(e.condition)} ? {self.expr(e.true_value)} : "
                    f"{self.expr(e.false_value)})")
        if kind in ("BufferLoad", "TensorLoad"):
            source = e.buffer if kind == "BufferLoad" else e.source
            name = self.buf(source)
            load = f"{name}[{self.index(e.indices)}]"
            return f"(({CTYPES[self.widen[name]]}){load})" if name in self.widen else load
        if kind in ("LShift", "RShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor"):
            op = {"LShift": "<<", "RShift": ">>", "BitwiseAnd": "&", "BitwiseOr": "|",
                  "BitwiseXor": "^"}[kind]
            return self.narrow(f"({self.expr(e.a)} {op} {self.expr(e.b)})", dtype)
        if kind == "Call":
            return self.call(e, dtype)
        raise UnsupportedTIR(f"expression {kind}")

    def is_wide32(self, e) -> bool:
        """An int64 expression that is an int32 value widened: a cast or a narrowed load."""
        kind = type(e).__name__
        if kind == "Cast":
            return vdtype(e.value) in ("int32", "int16", "int8")
        if kind in ("BufferLoad", "TensorLoad"):
            source = e.buffer if kind == "BufferLoad" else e.source
            return self.widen.get(self.lookup(source) or self.by_name(source) or "") == "int64"
        return False

    def macs(self, e) -> str | None:
        """``(x + y) * m [+ c]`` in int64 with int32 x, y, m (the requantization's
        ``(acc + bias) * multiplier + nudge``) as ``c + x * m + y * m``: two 32x32->64
        multiply-accumulates (SMLAL) instead of a 64x64 multiply; equal modulo 2^64.  Helper
        calls, because GCC folds the plain C back into ``(x + y) * m``.  None: no match."""
        init = "INT64_C(0)"
        if type(e).__name__ == "Add":
            if type(e.b).__name__ != "IntImm":
                return None
            init, e = self.expr(e.b), e.a
        if type(e).__name__ != "Mul":
            return None
        for a, b in ((e.a, e.b), (e.b, e.a)):
            if (type(a).__name__ == "Add" and self.is_wide32(a.a) and self.is_wide32(a.b)
                    and self.is_wide32(b)):
                x, y, m = (self.narrow32(v) for v in (a.a, a.b, b))
                return f"sg_mac_s32(sg_mac_s32({init}, {x}, {m}), {y}, {m})"
        return None

    def narrow32(self, e) -> str:
        """C of an ``is_wide32`` expression as its int32 value."""
        if type(e).__name__ == "Cast":
            return self.expr(e.value)
        name = self.buf(e.buffer if type(e).__name__ == "BufferLoad" else e.source)
        return f"{name}[{self.index(e.indices)}]"

    @staticmethod
    def narrow(text: str, dtype: str) -> str:
        """C promotes 8/16-bit operands to int; TIR wraps at the dtype's width."""
        if dtype in ("int8", "int16", "uint8", "uint16"):
            return f"(({CTYPES[dtype]}){text})"
        return text

    def call(self, e, dtype: str) -> str:
        full = e.op.name if hasattr(e.op, "name") else str(e.op)
        op = full.split(".")[-1]      # "tirx.shift_right", "prim.if_then_else", ...
        args = list(e.args)
        if op in CALL_BINOPS:
            return self.narrow(f"({self.expr(args[0])} {CALL_BINOPS[op]} {self.expr(args[1])})",
                               dtype)
        if op == "bitwise_not":
            return self.narrow(f"(~{self.expr(args[0])})", dtype)
        if op == "if_then_else":
            return f"({self.expr(args[0])} ? {self.expr(args[1])} : {self.expr(args[2])})"
        if op in ("likely", "assume"):
            return self.expr(args[0])
        if op in MATH and dtype in ("float32", "float64"):
            fn = MATH[op][0 if dtype == "float32" else 1]
            return f"{fn}({', '.join(self.expr(a) for a in args)})"
        if op == "call_extern":     # a helper of firmware/sg_kernels.h (compile/backends/cortexm/intrin)
            name = str(args[0].value)
            return f"{name}({', '.join(self.expr(a) for a in args[1:])})"
        if op == "tvm_access_ptr":  # (type, data, offset, extent, rw): pointer into a buffer
            name = self.data_name(args[1])
            self.referenced.add(name)
            self.pointers.add(name)
            return f"({name} + {self.expr(args[2])})"
        if op == "abs" or (op in MATH and op == "fabs"):
            a = self.expr(args[0])
            return f"(({a}) < 0 ? -({a}) : ({a}))"
        raise UnsupportedTIR(f"intrinsic {full}")

    # -- statements ----------------------------------------------------------------------
    def stmt(self, s) -> None:
        kind = type(s).__name__
        if kind == "SeqStmt":
            for x in s.seq:
                self.stmt(x)
        elif kind == "For":
            if str(s.kind) not in ("ForKind.SERIAL", "ForKind.UNROLLED", "ForKind.PARALLEL",
                                   "0", "1", "3"):
                raise UnsupportedTIR(f"loop kind {s.kind}")
            if s.step is not None and not (type(s.step).__name__ == "IntImm"
                                           and int(s.step.value) == 1):
                raise UnsupportedTIR("loop with a step other than 1")
            t = ctype(vdtype(s.loop_var))
            lo, ext = self.expr(s.min), self.expr(s.extent)
            v = self.bind(s.loop_var, s.loop_var.name)
            end = ext if lo == "0" else f"{lo} + {ext}"
            if ext.isdigit() and (str(s.kind) in ("ForKind.UNROLLED", "3")
                                  or _unrolled_size(s) <= UNROLL_MAX):
                self.line(f"#pragma GCC unroll {ext}")
            self.line(f"for ({t} {v} = {lo}; {v} < {end}; ++{v}) {{")
            self.block(s.body)
            self.line("}")
        elif kind == "Bind":
            t = ctype(vdtype(s.var))
            value = self.expr(s.value)
            self.line(f"const {t} {self.bind(s.var, s.var.name)} = {value};")
        elif kind == "BufferStore":
            name = self.buf(s.buffer)
            self.stored.append(name)
            self.line(f"{name}[{self.index(s.indices)}] = {self.expr(s.value)};")
        elif kind == "IfThenElse":
            self.line(f"if ({self.expr(s.condition)}) {{")
            self.block(s.then_case)
            if s.else_case is not None:
                self.line("} else {")
                self.block(s.else_case)
            self.line("}")
        elif kind == "DeclBuffer":
            self.decl_buffer(s.buffer)
        elif kind == "AllocBuffer":
            self.alloc_buffer(s.buffer)
        elif kind == "Evaluate":
            value = s.value
            if type(value).__name__ == "Call" and str(value.op.name).endswith("call_extern"):
                self.line(f"{self.expr(value)};")     # a helper that writes through pointers
            elif type(value).__name__ != "IntImm":
                raise UnsupportedTIR(f"call statement {value}")
        elif kind == "AttrStmt":
            self.stmt(s.body)
        else:
            raise UnsupportedTIR(f"statement {kind}")

    def block(self, body) -> None:
        self.indent += 1
        self.stmt(body)
        self.indent -= 1

    def decl_buffer(self, b) -> None:
        self.alias(b, self.data_name(b.data))

    def data_name(self, data) -> str:
        """C name of the array behind a buffer's data pointer."""
        if type(data).__name__ == "Call" and data.op.name.endswith("buffer_data"):
            # the lowering passes may rebuild a parameter Var: fall back to its (unique) name
            source = self.lookup(data.args[0]) or self.by_name(data.args[0])
            if source is None:
                raise UnsupportedTIR(f"buffer over unknown data {data}")
        elif type(data).__name__ == "Var":
            source = self.var(data)
        else:
            raise UnsupportedTIR(f"buffer declaration over {data}")
        return source

    def alloc_buffer(self, b) -> None:
        t = ctype(b.dtype)
        count = 1
        for extent in b.shape:
            if type(extent).__name__ != "IntImm":
                raise UnsupportedTIR("allocation with a dynamic shape")
            count *= int(extent.value)
        nbytes = count * np.dtype(str(b.dtype)).itemsize
        name = self.bind(b, b.name)
        self.params.append((b, name))
        if nbytes <= LOCAL_ALLOC_MAX:
            self.line(f"{t} {name}[{count}] = {{0}};")
        else:
            offset = self.ws_bytes
            self.ws_bytes = -(-(offset + nbytes) // WS_ALIGN) * WS_ALIGN
            self.line(f"{t} *restrict {name} = ({t} *)(ws + {offset});")
        if type(b.data).__name__ == "Var":
            self.alias(b.data, name)


def _type_key(obj) -> tuple | None:
    """(elements, dtype) of a buffer-typed Var or a Buffer with a constant shape: what
    survives FlattenBuffer, which rebuilds a [1, 4] parameter as a [4] one."""
    ty = getattr(obj, "ty", None) or obj
    try:
        return math.prod(int(d) for d in ty.shape), str(ty.dtype)
    except (AttributeError, TypeError):
        return None


def _unrolled_size(s) -> float:
    """Statements ``s`` becomes when all its loops are unrolled; inf when a loop extent is
    not a constant or a helper call (itself a loop) is inside."""
    kind = type(s).__name__
    if kind == "SeqStmt":
        return sum(_unrolled_size(x) for x in s.seq)
    if kind == "For":
        if type(s.extent).__name__ != "IntImm":
            return math.inf
        return int(s.extent.value) * _unrolled_size(s.body)
    if kind == "IfThenElse":
        return _unrolled_size(s.then_case) + (
            0 if s.else_case is None else _unrolled_size(s.else_case))
    if kind == "AttrStmt":
        return _unrolled_size(s.body)
    if kind == "Evaluate" and type(s.value).__name__ == "Call":
        return math.inf
    return 0 if kind in ("Bind", "DeclBuffer") else 1


def emit_kernel(name: str, func, narrow: dict[int, str] | None = None) -> KernelC:
    """C source of ``func`` (lowered, flattened PrimFunc) as ``static void name(...)``.
    ``narrow``: parameter index -> a narrower dtype its (constant) data is stored in; the
    parameter is declared with it and every load is cast back to the TIR dtype
    (``lower.narrow_constants``); not applied to a parameter passed on as a pointer."""
    narrow = dict(narrow or {})
    em = _Emitter()
    params, dtypes = [], []
    for i, p in enumerate(func.params):
        ty = getattr(p, "ty", None)
        if ty is None or type(ty).__name__ != "BufferType":
            raise UnsupportedTIR(f"scalar kernel parameter {p}")
        dtypes.append(narrow.get(i, str(ty.dtype)))
        params.append(em.bind(p, p.name))
        em.params.append((p, params[-1]))
        if i in narrow:
            em.widen[params[-1]] = str(ty.dtype)
    em.stmt(func.body)
    if em.pointers & set(em.widen):
        return emit_kernel(name, func, {i: d for i, d in narrow.items()
                                        if params[i] not in em.pointers})
    written = [n in em.stored for n in params]
    decls = [(f"{'' if w else 'const '}{ctype(d)}", n) for n, d, w in zip(params, dtypes, written)]
    if em.ws_bytes:
        decls.append(("uint8_t", "ws"))
    unused = [f"  (void){n};" for n in params if n not in em.referenced]
    body = "\n".join([*unused, *em.lines, "}"]) + "\n"
    same = [tuple(params.index(n) for n in group) for group in sorted(em.same)
            if all(n in params for n in group)]
    if any(written[i] for group in same for i in group):
        raise UnsupportedTIR(f"kernel {name} writes a parameter that shares its name")
    return KernelC(name, decls, body, dtypes, written, em.ws_bytes, em.float, same)
