"""How a QEMU command gets the trace plugin, and what it wrote."""
from __future__ import annotations

from pathlib import Path

from compile.cyclemodel.trace import Trace, parse
from compile.errors import BackendError


def plugin() -> Path:
    """The trace plugin's library, built on first use."""
    from compile.cyclemodel.plugin import PluginError, build

    try:
        return build()
    except PluginError as err:
        raise BackendError(f"QEMU trace plugin: {err}") from None


def plugin_options(outfile: Path, window: tuple[int, int] | None = None,
                   regions: dict[str, tuple[int, int]] | None = None, mem: bool = True,
                   blocks: bool = True) -> list[str]:
    """The plugin's arguments: counts into ``outfile``, blocks, a window [on, off) of code
    addresses, memory traffic per region (name -> [start, end))."""
    opts = [f"outfile={outfile}"]
    if blocks:
        opts.append("blocks=on")
    if mem:
        opts.append("mem=on")
    if window is not None:
        opts += [f"on={window[0] & ~1:x}", f"off={window[1] & ~1:x}"]   # Thumb bit off
    for name, (start, end) in (regions or {}).items():
        opts.append(f"region={name}:{start:x}:{end:x}")
    return opts


def plugin_argument(outfile: Path, **kwargs) -> list[str]:
    """``-plugin LIB,...`` for qemu-system-* (qemu-user takes the same after ``-plugin``)."""
    return ["-plugin", ",".join([str(plugin()), *plugin_options(outfile, **kwargs)])]


def read_trace(outfile: Path) -> Trace:
    try:
        return parse(Path(outfile).read_text())
    except FileNotFoundError:
        raise BackendError("QEMU exited without writing the trace") from None
