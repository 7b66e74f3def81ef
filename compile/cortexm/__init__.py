"""Cortex-M without a runtime: Relax -> scheduled TIR -> plain C -> standalone firmware.

microTVM (AOT executor, C runtime, Model Library Format) was removed from TVM in v0.19;
this package brings the useful part back for int8 models on Relax:

* ``lower``    Relax ``main`` -> a static step list (one kernel call per ``call_tir``) and
               lowered, allocation-free TIR kernels;
* ``intrin``   kernels that use the core: int8 dot products tensorized into SMLAD / Helium
               helpers (``firmware/sg_kernels.h``);
* ``cemit``    lowered TIR -> C functions with plain typed-pointer arguments;
* ``memplan``  static memory plan: every activation in ONE arena, reused by lifetime,
               outputs written in place or over the read part of a dying input
               (both checked on the kernel's TIR);
* ``project``  writes the firmware project (model.c/h, main.c, startup, linker script
               generated from the board file, Makefile), builds it and runs it in QEMU.
"""
