"""The dataset layout that training, the data pipeline, the benchmark and the demo model share.

    DATASET/
      index.jsonl            one JSON object per line and clip (see RECORD_FIELDS)
      videos/<id>.mp4        the clip (H.264)
      annotations/<id>.json  a trajectory spec (version 1): a mask (RLE) on every frame and a box on
                             every frame where the mask is not empty, for each object; the caption
      .lock                  taken (fcntl.flock) by every writer while it changes the index

`DatasetWriter` appends clips safely: video and annotation are written to hidden temporary files,
then, holding the lock, renamed into place and the index line appended with a single write + fsync;
a crash leaves no index line for a half-written clip. `Dataset` reads clips as (frames, caption,
trajectory), sampling T frames at a stride and resizing + centre-cropping frames and trajectory
alike. See docs/dataset-format.md.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError, MagicMotionError
from ..io import fsync_dir
from ..limits import MAX_FPS, MAX_JSON_DEPTH, check_size, json_depth
from ..trajectory import ObjectTrack, Trajectory

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

SAMPLING = ("random", "start", "center")

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


def _record_line(record: dict) -> bytes:
    return (json.dumps(record, default=_json_default, ensure_ascii=True) + "\n").encode("ascii")


def _check_record(record, where: str) -> dict:
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
            _check_record(record, where)
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
        _check_record(r, f"{root / INDEX}: record {i}")
        if r["id"] in seen:
            raise DatasetError(f"{root / INDEX}: record {i}: clip {r['id']} appears twice")
        seen.add(r["id"])
        try:
            lines.append(_record_line(r))
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
            line = _record_line(record)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"clip {clip_id}: extra fields: {e}") from None
        _check_record(json.loads(line), f"clip {clip_id}")
        if clip_id in self.ids():
            raise DatasetError(f"{self.root}: clip {clip_id} is already in the dataset")

        spec = to_dict(_with_caption(trajectory, caption))
        video_tmp = self._temp(VIDEOS, clip_id, ".mp4")
        ann_tmp = self._temp(ANNOTATIONS, clip_id, ".json")
        try:
            write_video(video_tmp, frames, fps=fps)
            _fsync_file(video_tmp)
            with open(ann_tmp, "w") as f:
                json.dump(spec, f)
                f.flush()
                os.fsync(f.fileno())
            with self._thread_lock, _DatasetLock(self.root):
                self._refresh()
                if clip_id in self._ids:
                    raise DatasetError(f"{self.root}: clip {clip_id} is already in the dataset")
                os.replace(video_tmp, self.root / record["video"])
                os.replace(ann_tmp, self.root / record["annotation"])
                fsync_dir(self.root / VIDEOS)
                fsync_dir(self.root / ANNOTATIONS)
                self._append(line)
                self._ids.add(clip_id)
        finally:
            video_tmp.unlink(missing_ok=True)
            ann_tmp.unlink(missing_ok=True)
        return record

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


# ---------------------------------------------------------------------------------------- reader


@dataclass
class Clip:
    """One clip as training sees it. frames: uint8 (T, H, W, 3); trajectory: the same T frames, at
    the same size; fps: frame rate of `frames` (the video's fps / stride); frame_indices: which
    frames of the stored video were taken."""

    id: str
    frames: np.ndarray
    caption: str
    trajectory: Trajectory
    fps: float
    record: dict
    frame_indices: list[int] = field(default_factory=list)


def slice_frames(traj: Trajectory, frame_indices) -> Trajectory:
    """The trajectory on frames `frame_indices` of `traj` (in that order; repeats allowed): frame j
    of the result is frame frame_indices[j] of `traj`."""
    idx = [int(i) for i in frame_indices]
    if not idx:
        raise DatasetError(f"{traj.where()}: no frames to take")
    bad = [i for i in idx if not 0 <= i < traj.num_frames]
    if bad:
        raise DatasetError(f"{traj.where()}: frame {bad[0]} outside 0..{traj.num_frames - 1}")
    out = Trajectory(traj.width, traj.height, len(idx), caption=traj.caption, source=traj.source)
    for o in traj.objects:
        track = ObjectTrack(id=o.id, label=o.label)
        for j, i in enumerate(idx):
            if i in o.boxes:
                track.boxes[j] = np.array(o.boxes[i], dtype=np.float64)
            if i in o.masks:
                track.masks[j] = dict(o.masks[i])
        out.objects.append(track)
    return out


class Dataset:
    """Clips of the dataset at `root` (torch-free; training wraps it).

    num_frames: T frames per clip (None: all frames); stride: take every stride-th frame;
    size: (W, H) to resize + centre-crop to (None: as stored); sampling: where the T frames start —
    "random" (drawn from (seed, epoch, clip id); call set_epoch each epoch), "start" or "center";
    split: only clips of that split; pad: repeat the last frame when a clip is too short (otherwise a
    short clip raises DatasetError)."""

    def __init__(self, root: str | os.PathLike, num_frames: int | None = None, stride: int = 1,
                 size: tuple[int, int] | None = None, sampling: str = "random",
                 split: str | None = None, seed: int = 0, pad: bool = False):
        if sampling not in SAMPLING:
            raise DatasetError(f"unknown sampling {sampling!r} (one of {', '.join(SAMPLING)})")
        if num_frames is not None and num_frames < 1:
            raise DatasetError(f"num_frames must be >= 1, got {num_frames}")
        if stride < 1:
            raise DatasetError(f"stride must be >= 1, got {stride}")
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise DatasetError(f"size must be positive, got {size}")
        self.root = Path(root)
        self.num_frames, self.stride, self.size = num_frames, int(stride), size
        self.sampling, self.split, self.seed, self.pad = sampling, split, int(seed), pad
        self.epoch = 0
        self.records = [r for r in read_index(self.root) if split is None or r["split"] == split]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Clip:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range (dataset has {len(self)})")
        return self.load_clip(self.records[i])

    def set_epoch(self, epoch: int) -> None:
        """Random sampling draws new windows each epoch."""
        self.epoch = int(epoch)

    def frame_indices(self, record: dict, available: int | None = None) -> list[int]:
        """Which stored frames clip `record` gives (of `available`, default the record's count)."""
        n = int(available if available is not None else record["num_frames"])
        if self.num_frames is None:
            return list(range(0, n, self.stride))
        span = (self.num_frames - 1) * self.stride + 1
        if span > n and not self.pad:
            raise DatasetError(
                f"{self.root}: clip {record['id']} has {n} frames, fewer than {self.num_frames} at "
                f"stride {self.stride} need ({span}); use pad=True to repeat its last frame")
        room = max(n - span, 0)
        if self.sampling == "start":
            start = 0
        elif self.sampling == "center":
            start = room // 2
        else:
            rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(record["id"].encode())])
            start = int(rng.integers(0, room + 1))
        return [min(start + j * self.stride, n - 1) for j in range(self.num_frames)]

    def load_annotation(self, record: dict) -> Trajectory:
        from ..trajectory import load

        from ..paths import contained

        clip = record["id"]
        path = contained(self.root, record.get("annotation", f"{ANNOTATIONS}/{clip}.json"), f"{self.root}: clip {clip}",
                         "annotation", DatasetError)
        if not path.is_file():
            raise DatasetError(f"{self.root}: clip {clip}: annotation {path} not found")
        try:
            traj = load(path)
        except MagicMotionError as e:
            raise DatasetError(f"{self.root}: clip {clip}: bad annotation: {e}") from None
        if (traj.width, traj.height, traj.num_frames) != (record["width"], record["height"],
                                                        record["num_frames"]):
            raise DatasetError(
                f"{self.root}: clip {clip}: annotation {path} is {traj.width}x{traj.height} with "
                f"{traj.num_frames} frames; the index says {record['width']}x{record['height']} with "
                f"{record['num_frames']}")
        return traj

    def check_videos_present(self) -> None:
        """Every clip's video is there and not empty (a stat per clip, nothing opened): a run that
        needs them all (training) stops before loading anything, naming the first one missing."""
        for record in self.records:
            path = self.root / record["video"]
            if not path.is_file():
                raise DatasetError(f"{self.root}: clip {record['id']}: video {path} not found")
            if path.stat().st_size == 0:
                raise DatasetError(f"{self.root}: clip {record['id']}: video {path} is empty (0 bytes)")

    def check_files(self, record: dict) -> None:
        """A clip's files before any is decoded: the annotation reads and matches the index, and the
        video exists, is not empty, opens, and its header agrees with the index (size, frame count
        where the container states it). DatasetError naming the clip and file."""
        import av

        from ..limits import check_video_stream

        clip = record["id"]
        self.load_annotation(record)
        path = self.root / record["video"]
        if not path.is_file():
            raise DatasetError(f"{self.root}: clip {clip}: video {path} not found")
        if path.stat().st_size == 0:
            raise DatasetError(f"{self.root}: clip {clip}: video {path} is empty (0 bytes)")
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DatasetError(f"{self.root}: clip {clip}: video {path} has no video stream")
                stream = container.streams.video[0]
                check_video_stream(path, stream, DatasetError)
                w, h, n = stream.codec_context.width, stream.codec_context.height, stream.frames
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise DatasetError(f"{self.root}: clip {clip}: unreadable video {path} ({e})") from None
        if not (0 <= w - record["width"] <= 1 and 0 <= h - record["height"] <= 1):
            raise DatasetError(f"{self.root}: clip {clip}: video {path} is {w}x{h}, the index says "
                               f"{record['width']}x{record['height']}")
        if n and n != record["num_frames"]:
            raise DatasetError(f"{self.root}: clip {clip}: video {path} has {n} frames, the index says "
                               f"{record['num_frames']}" + (" (truncated?)" if n < record["num_frames"] else ""))

    def load_clip(self, record: dict) -> Clip:
        """Read, sample and resize one clip given its index record."""
        from ..io import read_video
        from ..trajectory import rescale, resize_crop

        _check_record(record, f"{self.root}")
        clip = record["id"]
        traj = self.load_annotation(record)
        idx = self.frame_indices(record)
        path = self.root / record["video"]
        if not path.is_file():
            raise DatasetError(f"{self.root}: clip {clip}: video {path} not found")
        try:
            video, _ = read_video(path, max_frames=max(idx) + 1)
        except MagicMotionError as e:
            raise DatasetError(f"{self.root}: clip {clip}: {e}") from None
        if len(video) < max(idx) + 1:
            raise DatasetError(f"{self.root}: clip {clip}: video {path} has {len(video)} frames, the "
                               f"index says {record['num_frames']}")
        h, w = video.shape[1:3]
        if (w, h) != (traj.width, traj.height):
            # write_video pads odd sizes by one pixel
            if 0 <= w - traj.width <= 1 and 0 <= h - traj.height <= 1:
                video = video[:, :traj.height, :traj.width]
            else:
                raise DatasetError(f"{self.root}: clip {clip}: video {path} is {w}x{h}, the "
                                   f"annotation {traj.width}x{traj.height}")
        frames = video[idx]
        traj = slice_frames(traj, idx)
        if self.size is not None and self.size != (traj.width, traj.height):
            frames = resize_crop(frames, self.size)
            traj = rescale(traj, self.size)
        traj.caption = record["caption"]
        return Clip(id=clip, frames=np.ascontiguousarray(frames), caption=record["caption"],
                    trajectory=traj, fps=float(record["fps"]) / self.stride, record=record,
                    frame_indices=idx)


# ---------------------------------------------------------------------------------------- info


def dataset_info(root: str | os.PathLike, check_files: bool = True) -> dict:
    """Counts from the index: clips, splits, objects per clip, frames, sizes, fps, extra fields.
    With check_files, a missing video or annotation raises DatasetError naming the clip."""
    root = Path(root)
    records = read_index(root)
    if check_files:
        for r in records:
            for name, default in (("video", None), ("annotation", f"{ANNOTATIONS}/{r['id']}.json")):
                rel = r.get(name, default)
                if not (root / rel).is_file():
                    raise DatasetError(f"{root}: clip {r['id']}: {name} {root / rel} not found")

    def stats(values):
        if not values:
            return {"min": 0, "max": 0, "mean": 0.0, "total": 0}
        return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 3),
                "total": sum(values)}

    def counts(values):
        out: dict[str, int] = {}
        for v in values:
            out[str(v)] = out.get(str(v), 0) + 1
        return out

    objects = [r["num_objects"] for r in records]
    known = set(RECORD_FIELDS) | set(OPTIONAL_FIELDS)
    extra = sorted({k for r in records for k in r if k not in known})
    return {
        "root": str(root),
        "num_clips": len(records),
        "splits": counts(r["split"] for r in records),
        "num_objects": stats(objects),
        "objects_per_clip": dict(sorted(counts(objects).items(), key=lambda kv: int(kv[0]))),
        "num_frames": stats([r["num_frames"] for r in records]),
        "sizes": counts(f"{r['width']}x{r['height']}" for r in records),
        "fps": counts(float(r["fps"]) for r in records),
        "extra_fields": extra,
    }


def write_info_plot(info: dict, png_path: str | os.PathLike) -> Path:
    """A PNG bar chart of the number of clips by objects per clip (from `dataset_info`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    png_path = Path(png_path)
    per = info["objects_per_clip"]
    keys = [int(k) for k in per] or [1]
    xs = list(range(min(min(keys), 1), max(keys) + 1))
    ys = [per.get(str(x), 0) for x in xs]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.bar(xs, ys, color="#4878cf")
    ax.set_xticks(xs)
    ax.set_ylim(0, max(ys + [1]) * 1.15)
    ax.set_xlabel("objects per clip")
    ax.set_ylabel("clips")
    ax.set_title(f"{Path(info['root']).name}: {info['num_clips']} clips")
    for x, y in zip(xs, ys):
        if y:
            ax.annotate(str(y), (x, y), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return png_path
