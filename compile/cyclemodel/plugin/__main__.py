"""``python -m compile.cyclemodel.plugin``: build the trace plugin, print its path."""
import sys

from compile.cyclemodel.plugin import main

sys.exit(main())
