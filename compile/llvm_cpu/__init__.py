"""The LLVM CPU backend's compiler: host (x86) and aarch64 (Raspberry Pi)."""
