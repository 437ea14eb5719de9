"""The dataset layout that training, the data pipeline, the benchmark and the demo model share.

    DATASET/
      index.jsonl            one JSON object per line and clip (see RECORD_FIELDS)
      videos/<id>.mp4        the clip (H.264)
      annotations/<id>.json  a trajectory spec (version 1): a mask (RLE) on every frame and a box on
                             every frame where the mask is not empty, for each object; the caption
      .lock                  taken (fcntl.flock) by every writer while it changes the index

`DatasetWriter` appends clips safely: video and annotation are written to hidden temporary files,
then, holding the lock, renamed into place and the index line appended with a single write + fsync;
a crash leaves no index line for a half-written clip. `reader.Dataset` reads clips as (frames,
caption, trajectory), sampling T frames at a stride and resizing + centre-cropping frames and
trajectory alike; `info.dataset_info` summarises and checks a dataset. See docs/dataset-format.md.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DatasetError, MagicMotionError
from ..io import fsync_dir
from ..limits import MAX_FPS, MAX_JSON_DEPTH, check_size, json_depth
from ..trajectory import Trajectory

INDEX = "index.jsonl"
VIDEOS = "videos"
ANNOTATIONS = "annotations"
LOCK = ".lock"

# Fields every index record has, with their types; filters add more (scores).
RECORD_FIELDS = {
    "id": str, "video": str, "caption": str, "num_frames": int, "fps": (int, float),
    "width": int, "height": int, "num_objects": int, "split": str,
}
# Also written by DatasetWriter; the reader falls back to annotations/<id>.json when absent.
OPTIONAL_FIELDS = {"annotation": str}


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_clip_id(clip_id) -> str:
    """A clip id is a safe file name: letters, digits, '.', '_', '-' (not first), at most 128."""
    if not isinstance(clip_id, str) or not _ID.match(clip_id) or clip_id.endswith(".tmp"):
        raise DatasetError(
            f"clip id {clip_id!r} is not a safe file name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 128 characters)")
    return clip_id


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def record_line(record: dict) -> bytes:
    return (json.dumps(record, default=_json_default, ensure_ascii=True) + "\n").encode("ascii")


def check_record(record, where: str) -> dict:
    """Check an index record's fields and types; DatasetError naming `where` and the clip."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    clip = record.get("id")
    try:
        check_clip_id(clip)
    except DatasetError as e:
        raise DatasetError(f"{where}: {e}") from None
    for name, kind in {**RECORD_FIELDS, **OPTIONAL_FIELDS}.items():
        if name not in record:
            if name in OPTIONAL_FIELDS:
                continue
            raise DatasetError(f"{where}: clip {clip}: missing field '{name}'")
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise DatasetError(f"{where}: clip {clip}: field '{name}' has a bad value {value!r}")
    for name in ("num_frames", "width", "height"):
        if record[name] <= 0:
            raise DatasetError(f"{where}: clip {clip}: field '{name}' must be > 0, got {record[name]}")
    if not 0 < record["fps"] <= MAX_FPS or record["num_objects"] < 0:  # NaN fails the first
        raise DatasetError(f"{where}: clip {clip}: fps must be in (0, {MAX_FPS:g}] and num_objects >= 0, got fps "
                           f"{record['fps']!r}")
    check_size(record["width"], record["height"], f"{where}: clip {clip}", DatasetError)
    for name in ("video", "annotation"):
        value = record.get(name)
        if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise DatasetError(f"{where}: clip {clip}: '{name}' must be a path inside the dataset, "
                               f"got {value!r}")
    return record


# ---------------------------------------------------------------------------------------- index


def read_index(root: str | os.PathLike) -> list[dict]:
    """All records of `root/index.jsonl` in order. Blank lines are skipped; a malformed line, a
    record missing a field or a repeated id raises DatasetError naming the line (and clip)."""
    root = Path(root)
    path = root / INDEX
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if not path.is_file():
        raise DatasetError(f"{path}: index not found (not a dataset folder?)")
    records, seen = [], {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                if json_depth(raw.decode("utf-8")) > MAX_JSON_DEPTH:
                    raise DatasetError(f"{where}: index line nested deeper than {MAX_JSON_DEPTH} levels")
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
                hint = "" if raw.endswith(b"\n") else " (an unfinished last line: did a writer crash?)"
                raise DatasetError(f"{where}: malformed index line ({e}){hint}") from None
            check_record(record, where)
            if record["id"] in seen:
                raise DatasetError(f"{where}: clip {record['id']} repeats line {seen[record['id']]}")
            seen[record["id"]] = lineno
            records.append(record)
    return records


def write_index(root: str | os.PathLike, records: list[dict]) -> Path:
    """Replace the index with `records` (e.g. with scores added by a filter), atomically and under
    the dataset lock."""
    from ..io import atomic_path

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    seen = set()
    lines = []
    for i, r in enumerate(records):
        check_record(r, f"{root / INDEX}: record {i}")
        if r["id"] in seen:
            raise DatasetError(f"{root / INDEX}: record {i}: clip {r['id']} appears twice")
        seen.add(r["id"])
        try:
            lines.append(record_line(r))
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{root / INDEX}: clip {r['id']}: {e}") from None
    with _DatasetLock(root):
        with atomic_path(root / INDEX) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"".join(lines))
                f.flush()
                os.fsync(f.fileno())
    return root / INDEX


class _DatasetLock:
    """An exclusive fcntl.flock on DATASET/.lock (blocks until free)."""

    def __init__(self, root: Path):
        self.path = root / LOCK
        self.fd = None

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- writer


class DatasetWriter:
    """Appends clips to the dataset at `root` (created with its folders if missing).

    Several writers, in one or more processes, may add to one dataset: the index is only changed
    while holding DATASET/.lock."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"{self.root}: exists and is not a folder")
        try:
            (self.root / VIDEOS).mkdir(parents=True, exist_ok=True)
            (self.root / ANNOTATIONS).mkdir(exist_ok=True)
        except OSError as e:
            raise DatasetError(f"{self.root}: cannot create the dataset folders ({e})") from None
        self._thread_lock = threading.Lock()
        self._ids: set[str] = set()
        self._offset = 0  # bytes of the index already read into _ids
        self._inode = None
        with self._thread_lock, _DatasetLock(self.root):
            if not self.index_path.exists():  # an empty dataset is a valid one
                os.close(os.open(self.index_path, os.O_WRONLY | os.O_CREAT, 0o644))
                fsync_dir(self.root)
            self._refresh()

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def ids(self) -> set[str]:
        """Ids of the clips in the index now (including those other writers added)."""
        with self._thread_lock, _DatasetLock(self.root):
            self._refresh()
            return set(self._ids)

    def _refresh(self) -> None:
        """Read index lines added since the last call (call holding the lock). An unfinished last
        line is crash debris of a writer: it is removed (or terminated, if it is a whole record)."""
        path = self.index_path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._ids, self._offset, self._inode = set(), 0, None
            return
        if st.st_ino != self._inode or st.st_size < self._offset:  # rewritten by write_index
            self._ids, self._offset, self._inode = set(), 0, st.st_ino
        if st.st_size == self._offset:
            return
        with open(path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        tail = data[end:]
        if tail.strip():
            try:
                json.loads(tail)
                with open(path, "ab") as f:
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                end = len(data) + 1
                data += b"\n"
            except (json.JSONDecodeError, UnicodeDecodeError):
                os.truncate(path, self._offset + end)
        for raw in data[:end].splitlines():
            if not raw.strip():
                continue
            try:
                clip = json.loads(raw).get("id")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                raise DatasetError(f"{path}: malformed index line {raw[:80]!r}") from None
            self._ids.add(clip)
        self._offset += end

    def add(self, clip_id: str, frames: np.ndarray, trajectory: Trajectory, caption: str,
            fps: float = 8.0, split: str = "train", **extra_fields) -> dict:
        """Add one clip: frames uint8 (T, H, W, 3); `trajectory` with T frames of W x H, a mask of
        each object on every frame and a box wherever that mask is not empty. Extra fields (scores,
        provenance) go into the index record. Returns the record."""
        from ..io import write_video
        from ..trajectory import to_dict

        check_clip_id(clip_id)
        frames = np.asarray(frames)
        self._check_clip(clip_id, frames, trajectory)
        if not isinstance(caption, str):
            raise DatasetError(f"clip {clip_id}: caption must be a string")
        if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not fps > 0:
            raise DatasetError(f"clip {clip_id}: fps must be a positive number, got {fps!r}")
        if not isinstance(split, str) or not split:
            raise DatasetError(f"clip {clip_id}: split must be a non-empty string")
        reserved = set(RECORD_FIELDS) | set(OPTIONAL_FIELDS)
        clash = sorted(reserved & set(extra_fields))
        if clash:
            raise DatasetError(f"clip {clip_id}: extra fields {clash} clash with the record's own")
        t, h, w = frames.shape[:3]
        record = {"id": clip_id, "video": f"{VIDEOS}/{clip_id}.mp4",
                  "annotation": f"{ANNOTATIONS}/{clip_id}.json", "caption": caption,
                  "num_frames": int(t), "fps": float(fps), "width": int(w), "height": int(h),
                  "num_objects": len(trajectory.objects), "split": split, **extra_fields}
        try:
            line = record_line(record)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"clip {clip_id}: extra fields: {e}") from None
        check_record(json.loads(line), f"clip {clip_id}")
        if clip_id in self.ids():
            raise DatasetError(f"{self.root}: clip {clip_id} is already in the dataset")

        def encode(path: Path) -> None:
            write_video(path, frames, fps=fps)
            _fsync_file(path)

        self.add_files(clip_id, encode, json.dumps(to_dict(_with_caption(trajectory, caption))), line)
        return record

    def add_files(self, clip_id: str, put_video: Callable[[Path], None], annotation: str, line: bytes) -> None:
        """Add a clip whose record is checked (`line`, its index line): `put_video(path)` writes (and
        syncs) its video to a temporary file, the annotation JSON text goes to another, then, under
        DATASET/.lock, both are renamed into place and the line appended (DatasetError if the clip is in
        the index by now). No temporary file is left behind, whatever fails. `add` and the MagicData
        import (which links or copies its videos) both add clips this way."""
        video_tmp = self._temp(VIDEOS, clip_id, ".mp4")
        ann_tmp = self._temp(ANNOTATIONS, clip_id, ".json")
        try:
            put_video(video_tmp)
            with open(ann_tmp, "w") as f:
                f.write(annotation)
                f.flush()
                os.fsync(f.fileno())
            with self._thread_lock, _DatasetLock(self.root):
                self._refresh()
                if clip_id in self._ids:
                    raise DatasetError(f"{self.root}: clip {clip_id} is already in the dataset")
                os.replace(video_tmp, self.root / VIDEOS / f"{clip_id}.mp4")
                os.replace(ann_tmp, self.root / ANNOTATIONS / f"{clip_id}.json")
                fsync_dir(self.root / VIDEOS)
                fsync_dir(self.root / ANNOTATIONS)
                self._append(line)
                self._ids.add(clip_id)
        finally:
            video_tmp.unlink(missing_ok=True)  # a link too (the MagicData import links its videos)
            ann_tmp.unlink(missing_ok=True)

    def _temp(self, folder: str, clip_id: str, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{clip_id}.", suffix=f".tmp{suffix}",
                                    dir=self.root / folder)
        os.close(fd)
        return Path(name)

    def _append(self, line: bytes) -> None:
        fd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if self._inode is None:
            self._inode = st.st_ino
            fsync_dir(self.root)
        self._offset = st.st_size

    @staticmethod
    def _check_clip(clip_id: str, frames: np.ndarray, traj: Trajectory) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise DatasetError(f"clip {clip_id}: frames must be uint8 (T, H, W, 3), "
                               f"got {frames.dtype} {frames.shape}")
        t, h, w = frames.shape[:3]
        if not isinstance(traj, Trajectory):
            raise DatasetError(f"clip {clip_id}: the trajectory must be a Trajectory")
        if (traj.width, traj.height, traj.num_frames) != (w, h, t):
            raise DatasetError(
                f"clip {clip_id}: the trajectory is {traj.width}x{traj.height} with "
                f"{traj.num_frames} frames, the video {w}x{h} with {t} frames")
        if not traj.objects:
            raise DatasetError(f"clip {clip_id}: the trajectory has no objects")
        try:
            traj.validate()
        except MagicMotionError as e:
            raise DatasetError(f"clip {clip_id}: {e}") from None
        for o in traj.objects:
            for f in range(t):
                if f not in o.masks:
                    raise DatasetError(
                        f"clip {clip_id}: object {o.id} frame {f}: no mask (the dataset layout needs "
                        "a mask of every object on every frame)")
                if f not in o.boxes and o.mask_area(f) > 0:
                    raise DatasetError(
                        f"clip {clip_id}: object {o.id} frame {f}: no box where the mask is not empty")


def _with_caption(traj: Trajectory, caption: str) -> Trajectory:
    out = Trajectory(traj.width, traj.height, traj.num_frames, traj.objects, caption, traj.source)
    return out



