"""The register tiles of the default schedules (``compile.llvm_cpu.schedules``), which the
tile intrinsics (``compile.llvm_cpu.intrin.neon``) are registered for."""

CHANNEL_TILE = (16, 8, 4)   # output channels per vector tile: the largest that divides C
COLUMN_TILE = (4, 2)        # output columns per register tile: the largest that divides W
