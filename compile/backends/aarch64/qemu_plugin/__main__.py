"""``python -m compile.backends.aarch64.qemu_plugin``: build the instruction-counting plugin, print its path."""
import sys

from compile.backends.aarch64.qemu_plugin import main

sys.exit(main())
