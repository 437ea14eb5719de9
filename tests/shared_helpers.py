"""Helpers shared by test folders (importable by name: `tests/conftest.py` puts this folder on sys.path)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import zlib
from pathlib import Path


def free_port() -> int:
    """A localhost TCP port nobody listens on (for an app or a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height in its header (a decompression bomb as far as any reader can tell)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def run_two_ranks(command: list[str], timeout: float) -> list[str]:
    """`command` as ranks 0 and 1 of a torchrun-style 2-process group on localhost (environment set by
    hand; accelerate's PartialState makes the gloo group); asserts both exit 0; their outputs."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    return outputs
