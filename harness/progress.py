"""What a report run shows while it goes on, and where its details go.

The terminal gets one line per phase: on a terminal a tqdm bar (phase, n of N, elapsed, remaining, the
items running now, redrawn every second); when stderr is a pipe or a file, which cannot redraw a line, one
line per finished item with the same figures. Items of a phase differ in cost (a Cortex-M build takes
about four times a host build), so each item has a relative cost: the bar and the remaining time follow
the cost done so far, not the item count.

Everything else goes to the log file: each item's start and end, every command with its duration, the end
of a failed command's output (``logging`` logger ``harness``), and whatever native code prints on file
descriptor 2 (TVM, LiteRT and TFLite Micro write there from C++, out of Python's reach).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

from tqdm import tqdm

log = logging.getLogger("harness")
BAR = "{desc:<10} {done:>2}/{items:<2} {bar:16} {elapsed}<{remaining}{postfix}"
REFRESH_S = 1.0


@contextmanager
def terminal_and_log(log_path: Path) -> Iterator[TextIO]:
    """Send the ``harness`` logger, Python warnings and file descriptor 2 to ``log_path`` for the duration;
    yields the terminal's stderr (Python's own ``sys.stderr`` keeps writing there, so a traceback still
    shows)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1)
    saved_stderr = sys.stderr
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    loggers = [log, logging.getLogger("py.warnings")]
    saved_levels = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    logging.captureWarnings(True)
    # the handler flushes after each record, so what native code writes lands between records, in order
    os.dup2(handler.stream.fileno(), 2)
    sys.stderr = terminal
    try:
        yield terminal
    finally:
        sys.stderr = saved_stderr
        handler.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        logging.captureWarnings(False)
        for lg, level, propagate in saved_levels:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        handler.close()
        terminal.close()


class _Bar(tqdm):
    """tqdm counting cost (``n``, ``total``) that also shows items done of all (``done``, ``items``)."""

    def __init__(self, items: int, **kwargs):
        self.items, self.done = items, 0
        super().__init__(**kwargs)

    @property
    def format_dict(self):
        return {**super().format_dict, "items": self.items, "done": self.done}


class Item:
    """One unit of a phase; ``fail(message)`` marks it failed (the run goes on)."""

    def __init__(self, label: str):
        self.label = label
        self.failed: str | None = None

    def fail(self, message: str) -> None:
        self.failed = message


class Phase:
    """Items of one kind (builds, runs, ...) with their relative ``costs``, possibly several at once from
    threads."""

    def __init__(self, name: str, costs: list[float], stream: TextIO):
        self.name, self.total, self.stream = name, len(costs), stream
        self.cost, self.cost_done = float(sum(costs)), 0.0
        self.done = 0
        self.running: list[str] = []
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self.live = stream.isatty() and self.total > 0
        # smoothing=0: the remaining time from the average rate of the whole phase, not the last items
        self.bar = _Bar(self.total, total=self.cost, desc=name, file=stream, bar_format=BAR,
                        dynamic_ncols=True, mininterval=0.2, smoothing=0) if self.live else None
        self._stop = threading.Event()
        self._ticker = None
        if self.live:   # elapsed and remaining move while a long item runs
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        log.info("[%s] %d items", name, self.total)

    def _tick(self) -> None:
        while not self._stop.wait(REFRESH_S):
            with self._lock:
                self.bar.refresh()

    def _now(self) -> str:
        if not self.running:
            return ""
        more = f" (+{len(self.running) - 1})" if len(self.running) > 1 else ""
        return f"{self.running[-1]}{more}"

    @contextmanager
    def item(self, label: str, cost: float = 1.0) -> Iterator[Item]:
        """One item of the phase, of ``cost`` in the units of the phase's ``costs``."""
        item = Item(label)
        with self._lock:
            self.running.append(label)
            if self.live:
                self.bar.set_postfix_str(self._now(), refresh=True)
        log.info("[%s] start %s", self.name, label)
        start = time.monotonic()
        try:
            yield item
        except BaseException as err:
            item.fail(f"{type(err).__name__}: {err}")
            raise
        finally:
            self._finished(item, cost, time.monotonic() - start)

    def _finished(self, item: Item, cost: float, seconds: float) -> None:
        outcome = f"FAILED: {item.failed}" if item.failed else "ok"
        log.info("[%s] %s %s after %.1f s", self.name, outcome, item.label, seconds)
        with self._lock:
            self.running.remove(item.label)
            self.done += 1
            self.cost_done += cost
            if self.live:
                if item.failed:
                    self.bar.write(f"  {self.name} failed: {item.label}: {item.failed}", file=self.stream)
                self.bar.done = self.done
                self.bar.set_postfix_str(self._now(), refresh=False)
                self.bar.update(cost)
                return
            elapsed = time.monotonic() - self.start
            left = elapsed / self.cost_done * max(self.cost - self.cost_done, 0.0) if self.cost_done else 0.0
            print(f"{self.name:<10} {self.done:>2}/{self.total:<2} "
                  f"[{tqdm.format_interval(elapsed)}<{tqdm.format_interval(left)}] {item.label}: "
                  f"{outcome if item.failed else f'{seconds:.0f} s'}", file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.bar is not None:
            self.bar.set_postfix_str("", refresh=False)
            self.bar.close()
        log.info("[%s] done in %.1f s", self.name, time.monotonic() - self.start)


class Progress:
    """The phases of one run, shown on ``stream`` one after the other; ``log_path``: where the details go."""

    def __init__(self, stream: TextIO, log_path: Path):
        self.stream, self.log_path = stream, log_path

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        log.info("%s", text)

    @contextmanager
    def phase(self, name: str, costs: list[float]) -> Iterator[Phase]:
        """A phase of ``len(costs)`` items; ``costs``: each item's relative cost, in the order they run."""
        phase = Phase(name, costs, self.stream)
        try:
            yield phase
        finally:
            phase.close()
