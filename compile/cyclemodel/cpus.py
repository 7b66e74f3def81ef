"""The Arm CPUs the cycle model knows: how LLVM names them, and what its scheduling model leaves
out.

``llvm-mca`` (LLVM 19, Debian ``llvm-19``: it models Helium; LLVM 14 rejects MVE) gives each
executed block's cycles on the CPU's scheduling model. It does not model what happens between
blocks: a taken branch refills the pipeline. ``taken_branch_penalty`` is the cycles added per
taken exit of a block (the plugin counts those exactly), beyond the branch's own issue cycle that
llvm-mca already counts. Each value and its source are stated here; change them here only.
"""
from __future__ import annotations

from dataclasses import dataclass

from compile.errors import UserError

LLVM_MCA = "llvm-mca-19"
LLVM_MC = "llvm-mc-19"
LLVM_PACKAGE = "llvm-19"


@dataclass(frozen=True)
class Cpu:
    name: str
    triple: str                 # LLVM triple for decoding and scheduling
    taken_branch_penalty: int   # cycles per taken block exit, on top of llvm-mca's
    penalty_source: str
    instruction_bytes: int      # the smallest instruction (thumb 2, A64 4): decoding granule

    @property
    def mcpu(self) -> str:
        return self.name


CPUS = {cpu.name: cpu for cpu in (
    # Cortex-M4 TRM (DDI 0439B) 3.3.1: a taken branch costs 1 + P, P the pipeline refill, 1..3
    # cycles by target alignment and width; 2 is the middle of that range.
    Cpu("cortex-m4", "thumbv7em-none-eabi", 2, "Cortex-M4 TRM 3.3.1: B = 1 + P, P = 1..3", 2),
    # Cortex-M7 TRM (DDI 0489) 2.3: the branch target address cache predicts loop branches; a
    # predicted taken branch folds, a mispredicted one refills the 6-stage pipeline. One cycle
    # per taken exit is the average for loop-dominated code with one misprediction per loop.
    Cpu("cortex-m7", "thumbv7em-none-eabi", 1, "Cortex-M7 TRM 2.3: BTAC, predicted loops", 2),
    # Cortex-M55 TRM (101051) 3.2: 4-stage pipeline without a branch predictor for general
    # branches (low-overhead loops LE/WLS aside); a taken branch refills 2 stages.
    Cpu("cortex-m55", "thumbv8.1m.main-none-eabi", 2, "Cortex-M55 TRM: 4-stage, no predictor", 2),
    # Cortex-A53/A72/A76: branch predictors with a return stack and indirect predictor; a
    # correctly predicted taken branch costs the A53 one fetch bubble, the A72/A76 none.
    Cpu("cortex-a53", "aarch64-linux-gnu", 1, "Cortex-A53 TRM: predicted taken = 1 bubble", 4),
    Cpu("cortex-a72", "aarch64-linux-gnu", 0, "Cortex-A72 SWOG: predicted taken folds", 4),
    Cpu("cortex-a76", "aarch64-linux-gnu", 0, "Cortex-A76 SWOG: predicted taken folds", 4),
)}


def get_cpu(name: str) -> Cpu:
    try:
        return CPUS[name]
    except KeyError:
        raise UserError(f"no cycle model for CPU '{name}' (known: {', '.join(sorted(CPUS))})") \
            from None
