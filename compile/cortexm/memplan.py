"""Static memory plan: every activation and kernel workspace in ONE arena.

A buffer lives from the step that writes it to the last step that reads it (a kernel's
workspace lives during its own step only).  Two buffers may share bytes when their
lifetimes do not overlap.  Placement is greedy by size (largest first, each at the lowest
aligned offset that does not collide with an already placed buffer whose lifetime
overlaps) -- the "greedy by size" strategy of TFLite Micro's ``GreedyMemoryPlanner`` and
of Pisarchyk & Lee, "Efficient Memory Management for Deep Neural Net Inference"
(arXiv 2001.03288).  The plan is checked against the lower bound: the largest sum of live
buffer sizes at any step; no plan can be smaller.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 16


@dataclass(frozen=True)
class Buffer:
    name: str
    size: int
    first: int                  # first step it is live (written)
    last: int                   # last step it is live (read)

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class Plan:
    offsets: dict[str, int]
    arena_bytes: int
    lower_bound: int


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def lower_bound(buffers: list[Buffer]) -> int:
    """Largest sum of (aligned) live buffer sizes over all steps."""
    if not buffers:
        return 0
    last_step = max(b.last for b in buffers)
    return max(sum(_align(b.size) for b in buffers if b.first <= step <= b.last)
               for step in range(last_step + 1))


def plan(buffers: list[Buffer]) -> Plan:
    """Greedy-by-size placement (ties: earlier first step, then name, so plans are stable)."""
    placed: list[tuple[Buffer, int]] = []
    offsets: dict[str, int] = {}
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        busy = sorted((off, off + _align(other.size)) for other, off in placed
                      if other.overlaps_in_time(buf))
        offset = 0
        for start, end in busy:
            if offset + _align(buf.size) <= start:
                break
            offset = max(offset, end)
        placed.append((buf, offset))
        offsets[buf.name] = offset
    arena = max((off + _align(b.size) for b, off in placed), default=0)
    return Plan(offsets, arena, lower_bound(buffers))


def check(buffers: list[Buffer], p: Plan) -> None:
    """Raise AssertionError if two buffers live at the same time share a byte."""
    for i, a in enumerate(buffers):
        oa = p.offsets[a.name]
        assert oa % ALIGN == 0 and oa + a.size <= p.arena_bytes, f"{a.name} outside the arena"
        for b in buffers[i + 1:]:
            ob = p.offsets[b.name]
            if a.overlaps_in_time(b) and oa < ob + b.size and ob < oa + a.size:
                raise AssertionError(f"{a.name} and {b.name} are live together and overlap")
