"""One run per output: a file lock beside the output (`.NAME.lock`), held for the whole run.

generate, curate, bench run, train precompute and train take it; a second run writing the same output
fails at once (exit 2) naming the holder (pid, host, command, since when). The lock is an advisory
`flock`, released by the kernel when the holder dies, so a killed run never leaves a stale lock; the
file itself is removed on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import OutputLocked


def lock_path(output: str | os.PathLike) -> Path:
    """`.NAME.lock` beside the output, in its folder; when that folder does not exist yet, in the
    nearest one that does, named after the path below it (`.a__b.lock` for missing a/b)."""
    output = Path(os.path.abspath(output))
    parts = [output.name]
    folder = output.parent
    while not folder.is_dir() and folder != folder.parent:
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder / f".{'__'.join(parts)}.lock"


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, what: str = "output"):
    """Hold the lock of `output` while the block runs; OutputLocked when another run holds it.
    Where no lock file can be made (a read-only folder) the run goes on without one: the write itself
    then fails with its own message."""
    if os.environ.get("RANK", "0") != "0":  # the other processes of a launched run: the main one holds it
        yield None
        return
    path = lock_path(output)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLocked(f"{output}: {what} in use by another run ({holder}); wait for it to finish or "
                               "pick another output") from None
        try:  # the file may have been removed by the previous holder between open and flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["magicmotion", *sys.argv[1:]])[:300]}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
