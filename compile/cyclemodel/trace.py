"""What the trace plugin (``plugin/sgtrace.c``) wrote: executed blocks, their exits and memory
traffic."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from compile.errors import BackendError

OTHER = "other"


@dataclass
class Traffic:
    loads: int = 0
    load_bytes: int = 0
    stores: int = 0
    store_bytes: int = 0

    def add(self, other: "Traffic", scale: int = 1) -> None:
        self.loads += scale * other.loads
        self.load_bytes += scale * other.load_bytes
        self.stores += scale * other.stores
        self.store_bytes += scale * other.store_bytes

    def to_json(self) -> dict:
        return {"loads": self.loads, "load_bytes": self.load_bytes, "stores": self.stores,
                "store_bytes": self.store_bytes}


@dataclass
class Block:
    vaddr: int
    code: str                   # instruction bytes in hex, one word per instruction, ':'-joined
    executions: int = 0
    taken: int = 0
    traffic: dict[str, Traffic] = field(default_factory=dict)   # region name -> traffic

    @property
    def instructions(self) -> int:
        return self.code.count(":") + 1

    @property
    def size(self) -> int:
        return len(self.code.replace(":", "")) // 2


@dataclass
class Trace:
    instructions: int = 0
    windows: int = 0
    blocks: dict[tuple[int, str], Block] = field(default_factory=dict)
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> [start, end)

    def region_of(self, address: int) -> str:
        for name, (start, end) in self.regions.items():
            if start <= address < end:
                return name
        return OTHER

    def add(self, other: "Trace", scale: int = 1) -> None:
        """This trace plus ``scale`` times ``other`` (scale -1: the difference of two runs)."""
        self.instructions += scale * other.instructions
        self.windows += scale * other.windows
        self.regions.update(other.regions)
        for key, b in other.blocks.items():
            mine = self.blocks.setdefault(key, Block(b.vaddr, b.code))
            mine.executions += scale * b.executions
            mine.taken += scale * b.taken
            for region, t in b.traffic.items():
                mine.traffic.setdefault(region, Traffic()).add(t, scale)

    def traffic(self) -> dict[str, Traffic]:
        total: dict[str, Traffic] = collections.defaultdict(Traffic)
        for b in self.blocks.values():
            for region, t in b.traffic.items():
                total[region].add(t)
        return dict(total)


def parse(text: str) -> Trace:
    """The plugin's output file; blocks translated more than once are merged by (address, code)."""
    trace = Trace()
    regions: dict[int, str] = {-1: OTHER}
    by_id: dict[int, Block] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "instructions":
                trace.instructions = int(parts[1])
            elif parts[0] == "windows":
                trace.windows = int(parts[1])
            elif parts[0] == "region":
                regions[int(parts[1])] = parts[2]
                trace.regions[parts[2]] = (int(parts[3], 16), int(parts[4], 16))
            elif parts[0] == "tb":
                ident, vaddr, code = int(parts[1]), int(parts[2], 16), parts[6]
                block = trace.blocks.setdefault((vaddr, code), Block(vaddr, code))
                block.executions += int(parts[4])
                block.taken += int(parts[5])
                by_id[ident] = block
            elif parts[0] == "mem":
                t = Traffic(*map(int, parts[3:7]))
                by_id[int(parts[1])].traffic.setdefault(regions[int(parts[2])], Traffic()).add(t)
        except (IndexError, ValueError, KeyError):
            raise BackendError(f"unreadable trace line: {line[:120]!r}") from None
    return trace
