"""The console link (compile/backends/cortexm/link.py and firmware/main.c built -DSG_LINK).

On the QEMU boards the firmware's UART is QEMU's first serial port on a TCP socket, the same
protocol a real board speaks over its virtual COM port: Fashion-MNIST images validated over
it bit-exact, frames the firmware refuses, a board reset in the middle of a run (QEMU's
``system_reset`` through QMP).  What a damaged wire does (garbage, a truncated frame, a bad
CRC, silence, a dropped connection) is played by a socket server sending those bytes.
"""
import json
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from compile.backends.cortexm import link, project
from compile.backends.cortexm.graph import lower_model
from compile.backends.cortexm.link import BoardLink, LinkError, frame
from compile.paths import REPO
from compile.pipeline import compile_model
from compile.targets import get_target
from tests.factory import build_tflite, random_int8_inputs

READY = frame(b"R", struct.pack("<III", 784, 10, 25_000_000))


class FakeWire:
    """A TCP server that sends ``script`` (bytes, or a callable on the connection) to the
    first client, then keeps the connection open until closed (or closes it: ``hang_up``)."""

    def __init__(self, script, hang_up=False):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.script, self.hang_up = script, hang_up
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.server.accept()
        with conn:
            if callable(self.script):
                self.script(conn)
            else:
                conn.sendall(self.script)
            if not self.hang_up:
                self.done.wait(30)

    def close(self):
        self.done.set()
        self.server.close()


@pytest.mark.parametrize("script, hang_up, message", [
    (bytes(range(256)) * 300, False, "bytes that are no frame"),
    (b"sg:boot clock=1\n" + READY[:9], False, r"no answer .* within 3 s .*got 2 of 12 bytes"),
    (READY[:-1] + bytes([READY[-1] ^ 1]), False, "CRC does not match"),
    (b"", False, r"no answer from the board on .* within 3 s"),
    (b"sg:boot clock=1\n", True, "no answer|dropped"),
    (b"SG" + b"R" + struct.pack("<I", 1 << 30), False, "corrupt frame .* length 1073741824"),
    (frame(b"O", b"x" * 18), False, "did not start with a ready frame"),
])
def test_a_damaged_wire_is_one_link_error(script, hang_up, message):
    wire = FakeWire(script, hang_up)
    board = BoardLink(wire.url, timeout=3)
    try:
        with pytest.raises(LinkError, match=message):
            board.ready()
    finally:
        board.close()
        wire.close()


def test_frames_round_trip_and_boot_lines_are_counted():
    out = frame(b"O", bytes(range(10)) + struct.pack("<Q", 1234))
    wire = FakeWire(lambda conn: (conn.sendall(b"sg:boot clock=5\n" + READY),
                                  conn.recv(1000), conn.sendall(out)))
    board = BoardLink(wire.url, timeout=5)
    try:
        assert board.ready() == {"input_bytes": 784, "output_bytes": 10, "clock_hz": 25_000_000}
        assert board.boots == 1 and board.lines == [b"sg:boot clock=5"]
        y, count = board.infer(bytes(784), 10, 0, 1)
        assert y == bytes(range(10)) and count == 1234
    finally:
        board.close()
        wire.close()


def test_an_unopenable_port_is_a_link_error():
    with pytest.raises(LinkError, match="cannot open the board link /dev/nonexistent-tty"):
        BoardLink("/dev/nonexistent-tty", timeout=1)


# -- on the QEMU boards ------------------------------------------------------------------------
@pytest.mark.emulator
@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547"])
def test_fashion_mnist_validates_bit_exact_over_the_link(board, tmp_path):
    """The acceptance run: ``validate.py --port qemu`` with 20 test images, through the CLI."""
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(REPO / "compile" / "validate.py"), "--target",
                           board, "--n", "20", "--port", "qemu", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["bit_exact"] and report["n"] == 20 and report["inputs"] == "Fashion-MNIST test"
    metrics = report["target_metrics"]
    assert metrics["port"] == "qemu" and metrics["samples"] == 20
    assert metrics["instructions_per_inference"] > 1_000_000
    assert metrics["board_clock_hz"] == get_target(board)["clock_hz"]
    assert "over the link" in proc.stdout


@pytest.fixture(scope="module")
def link_elf(tmp_path_factory):
    """small_cnn's link firmware for mps2-an386."""
    tmp = tmp_path_factory.mktemp("link")
    model = build_tflite("small_cnn", tmp)
    target = get_target("mps2-an386")
    graph = lower_model(compile_model(model)[0])
    project.write_project(graph, target, tmp, random_int8_inputs(model, 1))
    project.make_firmware(tmp, target, goal="link")
    return tmp / "build" / "firmware-link.elf", model


@pytest.mark.emulator
def test_the_firmware_refuses_bad_frames_and_keeps_serving(link_elf):
    elf, model = link_elf
    target = get_target("mps2-an386")
    x = random_int8_inputs(model, 1)[0].tobytes()
    with link.qemu_board(target["run"]["command"], elf, 60) as board:
        info = board.ready()
        assert info["input_bytes"] == len(x)
        with pytest.raises(LinkError, match="refused the frame .* length is not the model's"):
            board.infer(x[:-1], info["output_bytes"], 0, 3)
        bad = bytearray(frame(b"I", x))
        bad[10] ^= 0xFF
        board.serial.write(bytes(bad))
        kind, payload = board.receive("a corrupt frame")
        assert (kind, payload) == (b"E", b"\x01")
        y, count = board.infer(x, info["output_bytes"], 2, 3)   # still serving
        assert len(y) == info["output_bytes"] and count > 0


@pytest.mark.emulator
def test_a_board_that_resets_mid_run_is_named(link_elf, tmp_path):
    elf, model = link_elf
    target = get_target("mps2-an386")
    qmp = tmp_path / "qmp.sock"
    x = random_int8_inputs(model, 1)[0].tobytes()
    command = [*target["run"]["command"], "-qmp", f"unix:{qmp},server=on,wait=off"]
    with link.qemu_board(command, elf, 30) as board:
        info = board.ready()
        board.infer(x, info["output_bytes"], 0, 4)
        board.infer(x, info["output_bytes"], 1, 4)
        with socket.socket(socket.AF_UNIX) as s:   # QMP: greeting, capabilities, reset
            s.connect(str(qmp))
            s.recv(4096)
            s.sendall(b'{"execute": "qmp_capabilities"}\n')
            s.recv(4096)
            s.sendall(b'{"execute": "system_reset"}\n')
            s.recv(4096)
            time.sleep(0.2)
        with pytest.raises(LinkError, match=r"reset during the run \(it booted again after 2 "
                                            r"of 4 inferences\)"):
            board.infer(x, info["output_bytes"], 2, 4)


@pytest.mark.emulator
def test_run_over_a_broken_link_is_one_error_line_and_writes_nothing(link_elf, tmp_path):
    """run.py --port to a 'board' that sends garbage: exit 2, one error line, no out.npy."""
    _, model = link_elf
    bundle = tmp_path / "bundle"
    subprocess.run([sys.executable, str(REPO / "compile" / "build.py"), "--target", "mps2-an386",
                    "--model", str(model), "--out", str(bundle)], check=True,
                   capture_output=True, cwd=REPO, timeout=600)
    x = tmp_path / "in.npy"
    np.save(x, random_int8_inputs(model, 2))
    wire = FakeWire(b"sg:boot clock=1\n" + bytes(range(256)) * 300)
    try:
        proc = subprocess.run([sys.executable, str(REPO / "compile" / "run.py"), "--target",
                               "mps2-an386", "--bundle", str(bundle), "--input", str(x),
                               "--output", str(tmp_path / "out.npy"), "--port", wire.url],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
    finally:
        wire.close()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the board on socket://") and "no frame" in lines[0]
    assert not (tmp_path / "out.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "in.npy"]
