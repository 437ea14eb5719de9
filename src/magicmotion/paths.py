"""Where a command may write, and where a path read from a data file may lead.

Two checks, each the only one of its kind, used by every command (docs/limits.md, "Paths"):

- `check_output(out, inputs=...)`: before any work, an output is never one of the command's inputs
  nor holds one (a folder output replaced whole would delete it), never inside an input folder or a
  dataset / benchmark folder (a folder with an `index.jsonl`) unless writing there is the command's
  job, and its folder can be written: a file in the way, a read-only or missing folder is one line
  and exit 2 here, not a traceback after the work is done.
- `contained(root, value)`: a path read from a data file (a CSV's video id, an index's video or
  annotation, a spec's mask) is relative, has no `..`, and, symbolic links followed, stays under the
  folder it is relative to (links a folder's owner placed are followed where our layouts make them:
  a dataset's videos, a MagicData release's folders).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import MagicMotionError

DATASET_MARKER = "index.jsonl"  # a dataset folder, and a benchmark set (a dataset with bench.json)


def _real(path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _within(path: Path, folder: Path) -> bool:
    """`path` is `folder` or below it (both real paths)."""
    return path == folder or folder in path.parents


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists (as anything: a file in the way counts)."""
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _dataset_above(path: Path) -> Path | None:
    """The nearest folder strictly above `path` (a real path) that is a dataset or benchmark set."""
    for folder in path.parents:
        if (folder / DATASET_MARKER).is_file():
            return folder
    return None


def check_output(out: str | os.PathLike, inputs=(), *, what: str = "--out",
                 error: type[MagicMotionError] = MagicMotionError, folder: bool = False,
                 make_parents: bool = False, in_dataset: bool = False, dataset: bool = False) -> Path:
    """Check an output path before any work; returns it as a Path.

    Args:
        inputs: the paths the command reads (files or folders; None entries are ignored).
        folder: the output is a folder (written into, or replaced whole).
        make_parents: missing folders above it are created by the command (else they must exist).
        in_dataset: the output may lie inside a dataset folder (`data info --plot` there).
        dataset: the output may itself be a dataset (`data synth`, `data curate`, ... resume one).
    Raises `error` naming the output and what is wrong."""
    out = Path(out)
    name = f"{out}: " if what == "--out" else f"{what} {out}: "
    real = _real(out)
    for given in inputs:
        if given is None:
            continue
        src = _real(given)
        if real == src or (os.path.exists(src) and os.path.exists(real) and os.path.samefile(src, real)):
            raise error(f"{name}would overwrite an input ({given}); pick another output")
        if os.path.isdir(src) and _within(real, src):
            raise error(f"{name}inside the input folder {given}; pick an output outside it")
        if folder and _within(src, real):
            raise error(f"{name}holds the input {given}; pick another output folder")
    above = _dataset_above(real)
    if above is not None and not in_dataset:
        raise error(f"{name}inside the dataset {above}; write it outside the dataset")
    if (real / DATASET_MARKER).is_file() and not dataset:
        raise error(f"{name}is a dataset folder; pick another output")
    check_writable(out, error=error, folder=folder, make_parents=make_parents, name=name)
    return out


def check_writable(out: str | os.PathLike, error: type[MagicMotionError] = MagicMotionError,
                   folder: bool = False, make_parents: bool = False, name: str | None = None) -> None:
    """The output can be made: its folder (or the nearest that exists, when the command makes the
    rest) is a folder we can create files in; tried with a file made and removed there."""
    out = Path(out)
    name = name if name is not None else f"{out}: "
    parent = Path(os.path.abspath(out)).parent
    if folder and out.is_dir():
        where = out
    elif os.path.isdir(parent):
        where = parent
    else:
        where = _nearest_existing(parent)
        if not where.is_dir():
            raise error(f"{name}cannot be created: {where} is a file, not a folder")
        if not make_parents:
            raise error(f"{name}output folder {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".magicmotion-write-check.", dir=where)
    except OSError as e:
        raise error(f"{name}cannot write in {where} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def contained(root: str | os.PathLike, value, where: str, what: str = "path",
              error: type[MagicMotionError] = MagicMotionError, links_out: bool = False) -> Path:
    """`root / value` for a path `value` read from a data file under `root`: relative, without
    `..`, and (symbolic links followed) still under `root`; else `error` naming `where`.

    `links_out`: symbolic links placed in the folder may lead out of it (a dataset's videos linked
    to the MagicData release by `data import-magicdata`, a release folder whose videos/ links to a
    download cache): the data file still cannot name a path outside."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise error(f"{where}: {what} {value!r} is not a path")
    rel = Path(value)
    if len(value) > 4096 or any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in rel.parts):
        raise error(f"{where}: {what} {value[:40]!r}... is longer than a file name can be")
    if rel.is_absolute() or ".." in rel.parts:
        raise error(f"{where}: {what} {value!r} must be a path inside {root} (no absolute path, no '..')")
    path = Path(root) / rel
    if not links_out and os.path.lexists(path) and not _within(_real(path), _real(root)):
        raise error(f"{where}: {what} {value!r} leads outside {root} (a symbolic link to {_real(path)})")
    return path
