"""Reading a dataset for training and evaluation: clips of a chosen length, stride and size, sampled
from an index (docs/dataset-format.md), with their trajectories sliced and resized to match."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError, MagicMotionError
from ..trajectory import ObjectTrack, Trajectory
from .dataset import ANNOTATIONS, check_record, read_index

SAMPLING = ("random", "start", "center")


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

        check_record(record, f"{self.root}")
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
