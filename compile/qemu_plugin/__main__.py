"""``python -m compile.qemu_plugin``: build the instruction-counting plugin, print its path."""
import sys

from compile.qemu_plugin import main

sys.exit(main())
