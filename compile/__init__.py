"""sandglass compiler: TFLite int8 models -> Apache TVM (Relax) -> host, Raspberry Pi and Cortex-M."""
