"""Cycles per execution of each executed block on a CPU, from LLVM's scheduling model
(``llvm-mca``).

A block's bytes are decoded with ``llvm-mc --disassemble`` (one bracketed instruction per line,
so an undecodable one is skipped alone, never shifting the rest), every block becomes one
``llvm-mca`` code region, and its cost is the region's steady state: total cycles of
``ITERATIONS`` back-to-back runs / ``ITERATIONS`` (the loops that dominate inference run the
same block many times in a row). Instructions LLVM cannot decode or re-assemble are modelled as
``nop``, those the CPU's scheduling model has no data for are left out; both are counted
(``Cost.unmodeled``).

Costs depend only on (LLVM version, CPU, bytes), so they are cached in
``~/.cache/sandglass/mca/<llvm-mca version>/<cpu>.json``.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compile.cyclemodel.cpus import LLVM_MC, LLVM_MCA, LLVM_PACKAGE, Cpu
from compile.errors import UserError
from compile.paths import cache_root

ITERATIONS = 100
ROUNDS = 5          # of turning rejected lines into nops
PREDICATION = re.compile(r"^(it|vpst|vpt)[a-z.0-9]*(\s|$)")
CHUNK = 4000        # blocks per llvm-mca run: bounds the size of one input and output
WARN_RE = re.compile(r"^<stdin>:(\d+):\d+: (?:warning|error)", re.M)
SKIPPED_RE = re.compile(r"^note: instruction:\s*(.*)$", re.M)
REGION_RE = re.compile(r"Code Region - b(\d+)\s.*?Total Cycles:\s+(\d+)", re.S)


@dataclass
class Cost:
    cycles: float           # per execution, steady state
    unmodeled: int          # instructions modelled as nop


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} not found: install the Debian package {LLVM_PACKAGE} "
                        "(scripts/setup.sh does)")
    return path


@functools.lru_cache(maxsize=None)
def version() -> str:
    out = subprocess.run([tool(LLVM_MCA), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"LLVM version (\S+)", out)
    return found.group(1) if found else "unknown"


def _decode(cpu: Cpu, codes: list[str]) -> list[list[str | None]]:
    """Assembly text of every instruction of every block (None: LLVM cannot decode it)."""
    lines, owners = [], []
    for i, code in enumerate(codes):
        for word in code.split(":"):
            lines.append("[" + " ".join("0x" + word[k:k + 2] for k in range(0, len(word), 2)) + "]")
            owners.append(i)
    proc = subprocess.run([tool(LLVM_MC), "--disassemble", f"-triple={cpu.triple}",
                           f"-mcpu={cpu.mcpu}"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True)
    bad = {int(n) - 1 for n in WARN_RE.findall(proc.stderr)}
    decoded = iter(ln.strip() for ln in proc.stdout.splitlines()
                   if ln.strip() and not ln.strip().startswith("."))
    out: list[list[str | None]] = [[] for _ in codes]
    for n, owner in enumerate(owners):
        out[owner].append(None if n in bad else next(decoded, None))
    return out


def _assemble_errors(cpu: Cpu, text: str) -> set[int]:
    """0-based lines of ``text`` the assembler rejects (all at once: it goes on after errors)."""
    proc = subprocess.run([tool(LLVM_MC), f"-triple={cpu.triple}", f"-mcpu={cpu.mcpu}",
                           "-filetype=null"], input=text, capture_output=True, text=True)
    return {int(n) - 1 for n in WARN_RE.findall(proc.stderr)}


def _opener(lines: list[str], n: int) -> int | None:
    """The IT/VPT instruction whose block line ``n`` may be in: among the 4 instructions before it,
    across region markers (the assembler's state crosses them)."""
    k, seen = n - 1, 0
    while k >= 0 and seen < 4:
        if not lines[k].startswith("#"):
            if PREDICATION.match(lines[k]):
                return k
            seen += 1
        k -= 1
    return None


def _measure(cpu: Cpu, codes: list[str]) -> list[Cost]:
    insns = _decode(cpu, codes)
    lines: list[str] = []
    for i, block in enumerate(insns):
        lines.append(f"# LLVM-MCA-BEGIN b{i}")
        lines += [ins if ins is not None else "nop" for ins in block]
        lines.append("# LLVM-MCA-END")
    unmodeled = [sum(ins is None for ins in block) for block in insns]
    owner, index = -1, {}
    for n, line in enumerate(lines):
        if line.startswith("# LLVM-MCA-BEGIN"):
            owner += 1
        index[n] = owner
    # A block may end inside an IT or VPT block (QEMU ends a translation there) or start inside one:
    # the assembler then rejects the predicated instructions. Those, and the IT/VPT that opened their
    # block, become nops, until it accepts every line.
    for _ in range(ROUNDS):
        rejected = [n for n in _assemble_errors(cpu, "\n".join(lines) + "\n")
                    if not lines[n].startswith("#")]
        if not rejected:
            break
        for n in rejected:
            for k in (n, _opener(lines, n)):
                if k is not None and lines[k] != "nop":
                    lines[k] = "nop"
                    unmodeled[index[k]] += 1
    # instructions the CPU's model has no data for (the M7 model lacks IT) are left out, and so is
    # a line the assembler still rejects after the rounds above
    proc = subprocess.run([tool(LLVM_MCA), f"-mtriple={cpu.triple}", f"-mcpu={cpu.mcpu}",
                           f"-iterations={ITERATIONS}", "-resource-pressure=false",
                           "-instruction-info=false", "-skip-unsupported-instructions=any"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True)
    if "is not a recognized processor" in proc.stderr:
        raise UserError(f"{LLVM_MCA} has no scheduling model for {cpu.name}")
    if proc.returncode != 0:
        raise UserError(f"{LLVM_MCA} failed on {cpu.name}: "
                        f"{proc.stderr.strip().splitlines()[-1:] or ['no message']}")
    skipped = {" ".join(t.split()) for t in SKIPPED_RE.findall(proc.stderr)}
    if skipped:
        for i, block in enumerate(insns):
            unmodeled[i] += sum(ins is not None and " ".join(ins.split()) in skipped
                                for ins in block)
    cycles = {int(i): int(c) / ITERATIONS for i, c in REGION_RE.findall(proc.stdout)}
    costs = []
    for i, block in enumerate(insns):
        if i in cycles:
            costs.append(Cost(cycles[i], unmodeled[i]))
        else:   # every instruction left out (a block of one Helium LE): one cycle each, unmodeled
            costs.append(Cost(float(len(block)), len(block)))
    return costs


def _cache_file(cpu: Cpu) -> Path:
    return cache_root() / "mca" / re.sub(r"[^A-Za-z0-9.+-]", "_", version()) / f"{cpu.name}.json"


def block_costs(cpu: Cpu, codes: set[str] | list[str]) -> dict[str, Cost]:
    """Cost of each block (by its code string), from the cache or from llvm-mca."""
    path = _cache_file(cpu)
    cached: dict[str, list] = {}
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except ValueError:
            cached = {}     # a cache only: rebuilt below
    missing = sorted(set(codes) - set(cached))
    fresh: dict[str, list] = {}
    for start in range(0, len(missing), CHUNK):
        part = missing[start:start + CHUNK]
        for code, cost in zip(part, _measure(cpu, part)):
            fresh[code] = [cost.cycles, cost.unmodeled]
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = json.loads(path.read_text()) if path.exists() else {}
            except ValueError:
                current = {}
            current.update(fresh)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(current, separators=(",", ":")))
            os.replace(tmp, path)
        cached.update(fresh)
    return {code: Cost(*cached[code]) for code in codes}
