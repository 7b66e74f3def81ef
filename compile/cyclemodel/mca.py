"""Cycles per execution of each executed block on a CPU, from LLVM's scheduling model
(``llvm-mca``).

A block's bytes are decoded with ``llvm-mc --disassemble --show-encoding`` (one bracketed
instruction per line; each decoded line is matched to its input by its encoding, so an
undecodable instruction is skipped alone, never shifting the rest), every block becomes one
``llvm-mca`` code region, and its cost is the region's steady state: total cycles of
``ITERATIONS`` back-to-back runs / ``ITERATIONS`` (the loops that dominate inference run the
same block many times in a row). Instructions LLVM cannot decode or re-assemble are modelled as
``nop``, those the CPU's scheduling model has no data for are left out; both are counted
(``Cost.unmodeled``).

Many blocks are costed in one run of each tool, so a block must not see its neighbours: Thumb's
IT and Helium's VPT make the disassembler and the assembler predicate the next instructions,
across block boundaries. QEMU starts and ends translation blocks inside such predication, so:
a block's instructions are decoded with no predication pending (``SEPARATOR`` after each block
uses up whatever is left open), and an IT/VPT whose instructions run past the end of its block
is left out (counted unmodeled; the block is decoded with a nop in its place), so that nothing
stays open for the next block. A block's cost therefore depends on its bytes alone, whichever
blocks it is costed with.

A call (``bl``/``blx``) costs one cycle here like any branch (llvm-mca assumes 100 unless told),
its pipeline refill being the taken-exit penalty of ``cpus``.

Costs depend only on (LLVM version, CPU, bytes, ``METHOD``), so they are cached in
``~/.cache/sandglass/mca/<llvm-mca version>/<cpu>.v<METHOD>.json``.
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

METHOD = 2          # how blocks are decoded and costed: part of the cache's name
ITERATIONS = 100
CALL_LATENCY = 1
ROUNDS = 5          # of turning rejected lines into nops
OPENER = re.compile(r"^(it[te]{0,3}|vpst[te]{0,3}|vpt[te]{0,3})(?=[\s.]|$)")
SEPARATOR = ["00bf"] * 4    # Thumb nops: take up to the 4 slots an IT/VPT left open
NOP = {2: "00bf", 4: "aff30080"}    # Thumb nop, nop.w
LEFT_OUT = ""       # an IT/VPT whose instructions are in the next block: not costed
ENCODING_RE = re.compile(r"encoding: \[([0-9a-fx, ]*)\]")
INVALID_RE = re.compile(r"^<stdin>:(\d+):\d+: (?:warning: invalid instruction encoding|error)",
                        re.M)
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


def _disassemble(cpu: Cpu, words: list[str]) -> list[str | None]:
    """Assembly text of each instruction word (None: LLVM cannot decode it). llvm-mc prints
    nothing for an invalid encoding and prints the rest, also what it warns about, so each line
    it prints is matched to its input by its encoding."""
    lines = ["[" + " ".join("0x" + w[k:k + 2] for k in range(0, len(w), 2)) + "]" for w in words]
    proc = subprocess.run([tool(LLVM_MC), "--disassemble", "--show-encoding",
                           f"-triple={cpu.triple}", f"-mcpu={cpu.mcpu}"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True)
    invalid = {int(n) - 1 for n in INVALID_RE.findall(proc.stderr)}
    printed = []
    for line in proc.stdout.splitlines():
        found = ENCODING_RE.search(line)
        if found:
            text = line[:found.start()].strip().rstrip("@/").strip()
            printed.append((text, found.group(1).replace("0x", "").replace(",", "")
                            .replace(" ", "")))
    out: list[str | None] = []
    it = iter(printed)
    for n, word in enumerate(words):
        if n in invalid:
            out.append(None)
            continue
        got, text = "", None
        while len(got) < len(word):     # an input LLVM splits in two is undecodable to us
            nxt = next(it, None)
            if nxt is None:
                break
            text, enc = nxt if not got else (None, nxt[1])
            got += enc
        out.append(" ".join(text.split()) if text and got == word else None)
    return out


def _slots(ins: str | None) -> int:
    """How many following instructions an IT/VPT predicates (0 for any other instruction)."""
    found = OPENER.match(ins or "")
    if not found:
        return 0
    head = found.group(1)
    return len(head) - (1 if head.startswith("it") else 3 if head.startswith("vpst") else 2)


def _decode(cpu: Cpu, codes: list[str]) -> list[list[str | None]]:
    """Assembly text of every instruction of every block (None: LLVM cannot decode it), each
    block decoded with no IT/VPT pending from the block before it, and none left open by its
    own end: such an opener is ``LEFT_OUT`` and the block is decoded with a nop in its place."""
    thumb = cpu.triple.startswith("thumb")
    blocks = [code.split(":") for code in codes]

    def run(blocks: list[list[str]]) -> list[list[str | None]]:
        words, spans = [], []
        for block in blocks:
            spans.append((len(words), len(words) + len(block)))
            words += block + (SEPARATOR if thumb else [])
        text = _disassemble(cpu, words)
        return [text[a:b] for a, b in spans]

    out = run(blocks)
    if thumb:
        open_ends = {}
        for i, insns in enumerate(out):
            for k, ins in enumerate(insns):
                if k + _slots(ins) >= len(insns):
                    words = list(blocks[i])
                    words[k] = NOP[len(words[k]) // 2]
                    open_ends[i] = (k, words)
                    break
        if open_ends:
            redone = run([words for _, words in open_ends.values()])
            for (i, (k, _)), insns in zip(open_ends.items(), redone):
                out[i] = insns[:k] + [LEFT_OUT] + insns[k + 1:]
    return out


def _assemble_errors(cpu: Cpu, text: str) -> set[int]:
    """0-based lines of ``text`` the assembler rejects (all at once: it goes on after errors)."""
    proc = subprocess.run([tool(LLVM_MC), f"-triple={cpu.triple}", f"-mcpu={cpu.mcpu}",
                           "-filetype=null"], input=text, capture_output=True, text=True)
    return {int(n) - 1 for n in WARN_RE.findall(proc.stderr)}


def _opener(lines: list[str], n: int) -> int | None:
    """The IT/VPT instruction whose block line ``n`` may be in: among the 4 instructions before it
    in its block."""
    k, seen = n - 1, 0
    while k >= 0 and seen < 4 and not lines[k].startswith("#"):
        if _slots(lines[k]):
            return k
        seen += 1
        k -= 1
    return None


def _measure(cpu: Cpu, codes: list[str]) -> list[Cost]:
    insns = _decode(cpu, codes)
    lines: list[str] = []
    index: dict[int, int] = {}      # line -> its block
    for i, block in enumerate(insns):
        body = [ins if ins is not None else "nop" for ins in block if ins != LEFT_OUT]
        if not body:        # llvm-mca takes no empty region: costed below as left out
            continue
        lines.append(f"# LLVM-MCA-BEGIN b{i}")
        index.update((len(lines) + k, i) for k in range(len(body)))
        lines += body
        lines.append("# LLVM-MCA-END")
    unmodeled = [sum(ins is None or ins == LEFT_OUT for ins in block) for block in insns]
    # What the assembler still rejects (an instruction LLVM decodes but cannot re-assemble, or one
    # it requires in an IT/VPT block) becomes a nop, with the IT/VPT it is in, until it accepts
    # every line.
    for _ in range(ROUNDS):
        rejected = [n for n in _assemble_errors(cpu, "\n".join(lines) + "\n") if n in index]
        if not rejected:
            break
        for n in rejected:
            for k in (n, _opener(lines, n)):
                if k is not None and lines[k] != "nop":
                    lines[k] = "nop"
                    unmodeled[index[k]] += 1
    # instructions the CPU's model has no data for (the M7 model lacks IT) are left out, and so is
    # a line the assembler still rejects after the rounds above
    stdout = ""
    if lines:
        proc = subprocess.run([tool(LLVM_MCA), f"-mtriple={cpu.triple}", f"-mcpu={cpu.mcpu}",
                               f"-iterations={ITERATIONS}", f"-call-latency={CALL_LATENCY}",
                               "-resource-pressure=false", "-instruction-info=false",
                               "-skip-unsupported-instructions=any"],
                              input="\n".join(lines) + "\n", capture_output=True, text=True)
        if "is not a recognized processor" in proc.stderr:
            raise UserError(f"{LLVM_MCA} has no scheduling model for {cpu.name}")
        if proc.returncode != 0:
            raise UserError(f"{LLVM_MCA} failed on {cpu.name}: "
                            f"{proc.stderr.strip().splitlines()[-1:] or ['no message']}")
        stdout = proc.stdout
        skipped = {" ".join(t.split()) for t in SKIPPED_RE.findall(proc.stderr)}
        for i, block in enumerate(insns):
            unmodeled[i] += sum(bool(ins) and " ".join(ins.split()) in skipped for ins in block)
    cycles = {int(i): int(c) / ITERATIONS for i, c in REGION_RE.findall(stdout)}
    costs = []
    for i, block in enumerate(insns):
        if i in cycles:
            costs.append(Cost(cycles[i], unmodeled[i]))
        else:   # every instruction left out (a block of one Helium LE or one cut-off VPST):
            # one cycle each, unmodeled
            costs.append(Cost(float(len(block)), len(block)))
    return costs


def _cache_file(cpu: Cpu) -> Path:
    return (cache_root() / "mca" / re.sub(r"[^A-Za-z0-9.+-]", "_", version())
            / f"{cpu.name}.v{METHOD}.json")


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
