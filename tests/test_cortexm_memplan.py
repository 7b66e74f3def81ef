"""The static memory planner (compile/cortexm/memplan.py), checked on the plan itself."""
import numpy as np
import pytest

from compile.cortexm import memplan
from compile.cortexm.memplan import Buffer


def random_buffers(seed: int, n: int = 40, steps: int = 30) -> list[Buffer]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        first = int(rng.integers(0, steps))
        last = int(rng.integers(first, min(steps, first + 6)))
        out.append(Buffer(f"b{i}", int(rng.integers(1, 5000)), first, last))
    return out


def overlapping_pairs(buffers, plan):
    """Pairs of buffers live at the same step whose byte ranges intersect (should be none)."""
    bad = []
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            oa, ob = plan.offsets[a.name], plan.offsets[b.name]
            if a.first <= b.last and b.first <= a.last and oa < ob + b.size and ob < oa + a.size:
                bad.append((a.name, b.name))
    return bad


@pytest.mark.parametrize("seed", range(20))
def test_plan_never_overlaps_live_buffers(seed):
    buffers = random_buffers(seed)
    plan = memplan.plan(buffers)
    assert overlapping_pairs(buffers, plan) == []
    memplan.check(buffers, plan)
    assert plan.lower_bound <= plan.arena_bytes
    assert all(off % memplan.ALIGN == 0 for off in plan.offsets.values())
    assert all(plan.offsets[b.name] + b.size <= plan.arena_bytes for b in buffers)


def test_chain_reuses_memory_and_meets_lower_bound():
    # a -> b -> c -> d: each buffer only overlaps its neighbours, two slots suffice
    chain = [Buffer("a", 1000, 0, 1), Buffer("b", 800, 1, 2), Buffer("c", 1000, 2, 3),
             Buffer("d", 800, 3, 4)]
    plan = memplan.plan(chain)
    assert plan.arena_bytes == plan.lower_bound == 1008 + 800
    assert plan.offsets["a"] != plan.offsets["b"]


def test_check_catches_overlap():
    buffers = [Buffer("a", 64, 0, 2), Buffer("b", 64, 1, 3)]
    bad = memplan.Plan({"a": 0, "b": 32}, 96, 128)
    with pytest.raises(AssertionError, match="overlap"):
        memplan.check(buffers, bad)
