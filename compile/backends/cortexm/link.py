"""The host end of the console link: inputs to a board, outputs and counts back.

The firmware built with ``-DSG_LINK`` (``make link`` in a bundle's project) prints its
``sg:boot`` line and then speaks frames over its console UART (``firmware/main.c`` has the
format): the host sends one input tensor per ``I`` frame and gets back one ``O`` frame with
the outputs and the count of the inference (cycles on a real board, instructions on QEMU).
The same protocol runs over a board's USB virtual COM port (``/dev/ttyACM0``), a pty, or
QEMU's first serial port on a TCP socket (``qemu_board``): ``open_port``.

Everything that can go wrong on a wire is one ``LinkError`` (a ``BackendError``, printed as
one ``error:`` line): no port, no answer in time, bytes that never make a frame, a frame whose
CRC does not match, a frame the board refused, a board that boots again in the middle of a
run (it reset), a board built for another model.
"""
from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np

from compile.errors import BackendError

MAGIC = b"SG"
BOOT = b"sg:boot"
# a frame's payload is at most this long (the largest input or output of a model we build
# for a microcontroller is far below it): a longer length is a corrupt header
MAX_PAYLOAD = 1 << 20
# bytes that may arrive without a frame before the link gives up on them
MAX_GARBAGE = 1 << 16
REFUSALS = {1: "its CRC did not match", 2: "its length is not the model's input size",
            3: "its type is unknown"}


class LinkError(BackendError):
    """The board link failed: the message names the port and what went wrong."""


def frame(kind: bytes, payload: bytes) -> bytes:
    head = kind + struct.pack("<I", len(payload))
    return MAGIC + head + payload + struct.pack("<I", zlib.crc32(head + payload))


class SocketPort:
    """``socket://HOST:PORT`` as a serial port: pyserial's own opens by discarding whatever
    already arrived, which can be the board's first words (QEMU starts the board the moment
    the connection is made)."""

    def __init__(self, url: str, timeout: float):
        host, _, port = url[len("socket://"):].partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.settimeout(timeout)

    def read(self, n: int) -> bytes:
        try:
            data = self.sock.recv(n)
        except socket.timeout:
            return b""
        if not data:
            raise OSError("the other end closed the connection")
        return data

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


def open_port(url: str, timeout: float = 0.01):
    """A serial port for ``url``: ``socket://H:P`` (SocketPort), else pyserial's
    ``serial_for_url`` (a device such as /dev/ttyACM0, ``rfc2217://``, ``loop://``, ...)."""
    import serial

    if url.startswith("socket://"):
        return SocketPort(url, timeout)
    return serial.serial_for_url(url, timeout=timeout)


class BoardLink:
    """Frames over a serial port; ``port`` is anything pyserial's ``serial_for_url`` opens."""

    def __init__(self, port: str, timeout: float, serial_port=None):
        import serial

        self.port = port
        self.timeout = timeout
        self.boots = 0               # boot lines seen
        self.lines: list[bytes] = []  # the last text lines the board printed between frames
        self.text = bytearray()      # an unfinished text line
        self.pending = bytearray()   # received, not yet taken
        self.skipped = 0             # bytes since the last frame that were not one
        try:
            self.serial = serial_port or open_port(port)
        except (serial.SerialException, OSError, ValueError) as err:
            raise LinkError(f"cannot open the board link {port}: {err}") from None

    def close(self) -> None:
        self.serial.close()

    # -- receiving -----------------------------------------------------------------------
    def _fill(self, deadline: float, what: str, need: int) -> None:
        """Read what the port has (at least one byte) into ``self.pending``."""
        import serial

        if time.monotonic() > deadline:
            raise LinkError(f"no answer from the board on {self.port} within "
                            f"{self.timeout:g} s ({what}; got {len(self.pending)} of {need} "
                            "bytes)")
        try:
            self.pending += self.serial.read(1 << 16)   # what arrives within the port timeout
        except (serial.SerialException, OSError) as err:
            raise LinkError(f"the board link {self.port} dropped ({what}): {err}") from None

    def _take(self, n: int, deadline: float, what: str) -> bytes:
        while len(self.pending) < n:
            self._fill(deadline, what, n)
        data, self.pending = bytes(self.pending[:n]), self.pending[n:]
        return data

    def receive(self, what: str) -> tuple[bytes, bytes]:
        """The next frame (kind, payload); text before it is kept, boot lines counted."""
        deadline = time.monotonic() + self.timeout
        while (at := self.pending.find(MAGIC)) < 0:
            keep = 1 if self.pending.endswith(MAGIC[:1]) else 0   # half a magic
            self._skip(len(self.pending) - keep)
            if self.skipped > MAX_GARBAGE:
                raise LinkError(f"the board on {self.port} sent {self.skipped} bytes that are "
                                f"no frame ({what}): is it running the link firmware "
                                "(`make link`) at the right baud rate?")
            self._fill(deadline, what, 2)
        self._skip(at)
        self.skipped = 0
        self.pending = self.pending[2:]
        head = self._take(5, deadline, what)
        kind, length = head[:1], struct.unpack("<I", head[1:])[0]
        if length > MAX_PAYLOAD:
            raise LinkError(f"a corrupt frame from the board on {self.port} ({what}): length "
                            f"{length}")
        payload = self._take(length, deadline, what)
        (crc,) = struct.unpack("<I", self._take(4, deadline, what))
        if crc != zlib.crc32(head + payload):
            raise LinkError(f"a corrupt frame from the board on {self.port} ({what}): its CRC "
                            "does not match")
        return kind, payload

    def _skip(self, n: int) -> None:
        """Bytes before a frame: text lines (boot lines counted) or garbage."""
        if n <= 0:
            return
        self.text += self.pending[:n]
        self.skipped += n
        self.pending = self.pending[n:]
        lines = self.text.split(b"\n")
        self.boots += sum(line.startswith(BOOT) for line in lines[:-1])
        self.text = bytearray(lines[-1])[-4096:]
        self.lines += [bytes(line) for line in lines[:-1]][-16:]

    # -- the protocol --------------------------------------------------------------------
    def ready(self) -> dict:
        """Wait for the board's ready frame: {input_bytes, output_bytes, clock_hz}."""
        kind, payload = self.receive("waiting for the board to start")
        if kind != b"R" or len(payload) != 12:
            raise LinkError(f"the board on {self.port} did not start with a ready frame "
                            f"(got a '{kind.decode(errors='replace')}' frame)")
        return dict(zip(("input_bytes", "output_bytes", "clock_hz"),
                        struct.unpack("<III", payload)))

    def infer(self, sample: bytes, output_bytes: int, index: int, total: int):
        """(output bytes, count) of one inference."""
        boots = self.boots
        self.serial.write(frame(b"I", sample))
        what = f"inference {index + 1} of {total}"
        kind, payload = self.receive(what)
        if self.boots != boots:
            raise LinkError(f"the board on {self.port} reset during the run (it booted again "
                            f"after {index} of {total} inferences)")
        if kind == b"E" and len(payload) == 1:
            raise LinkError(f"the board on {self.port} refused the frame of {what}: "
                            f"{REFUSALS.get(payload[0], f'code {payload[0]}')}")
        if kind != b"O" or len(payload) != output_bytes + 8:
            raise LinkError(f"an unexpected '{kind.decode(errors='replace')}' frame of "
                            f"{len(payload)} bytes from the board on {self.port} ({what})")
        return payload[:output_bytes], struct.unpack("<Q", payload[output_bytes:])[0]

    def quit(self) -> None:
        self.serial.write(frame(b"Q", b""))
        self.serial.flush()


def run_inputs(link: BoardLink, inputs: np.ndarray, out_dtype: str, out_shape) -> tuple:
    """(outputs (N, *out_shape), counts per inference, the board's clock) over ``link``."""
    info = link.ready()
    samples = [np.ascontiguousarray(x).tobytes() for x in inputs]
    if len(samples[0]) != info["input_bytes"]:
        raise LinkError(f"the board on {link.port} runs a model with {info['input_bytes']}-byte "
                        f"inputs, this bundle's are {len(samples[0])} bytes: flash this "
                        "bundle's link firmware (`make flash-link`)")
    expected = int(np.prod(out_shape)) * np.dtype(out_dtype).itemsize
    outputs, counts = [], []
    for i, sample in enumerate(samples):
        y, count = link.infer(sample, expected, i, len(samples))
        outputs.append(np.frombuffer(y, out_dtype).reshape(out_shape))
        counts.append(count)
    link.quit()
    return np.stack(outputs), counts, info["clock_hz"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def qemu_board(command: list[str], elf: Path, timeout: float):
    """A BoardLink to QEMU running ``elf`` with the board's first serial port on a local TCP
    socket.  QEMU waits for the connection before it starts the board, so nothing the
    firmware prints is lost."""
    port = free_port()
    proc = subprocess.Popen([*command, "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on",
                             "-kernel", str(elf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"socket://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + min(timeout, 30)
        while True:   # until QEMU listens
            try:
                port_ = open_port(url)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    raise LinkError(f"QEMU did not open the serial socket: {out.strip()[-300:]}")
                time.sleep(0.05)
        link = BoardLink(url, timeout, port_)
        try:
            yield link
        finally:
            link.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
