"""Trajectories from label images: a label video in memory (`from_label_masks`) or a folder of mask
PNGs, one per annotated frame, as DAVIS and SAM tools write them (`from_mask_frames`), with the frames
between sparse annotations filled (`sparse.py`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import TrajectoryError
from ..limits import MAX_FRAMES
from .spec import ObjectTrack, Trajectory, mask_box


def from_label_masks(labels: np.ndarray, caption: str = "", labels_by_id: dict | None = None,
                     frames: list[int] | None = None, num_frames: int | None = None,
                     source: str = "") -> Trajectory:
    """Label images (T, H, W), value = object id, -> a trajectory with a mask on each given frame for
    every id present anywhere, and a box wherever the mask is not empty.

    `frames` gives the frame index of each label image (default 0..T-1)."""
    labels = np.asarray(labels)
    where = source or "labels"
    if labels.ndim != 3 or not len(labels):
        raise TrajectoryError(f"{where}: label masks must be (T, H, W) with T >= 1, got {labels.shape}")
    frames = list(range(len(labels))) if frames is None else list(frames)
    if len(frames) != len(labels):
        raise TrajectoryError(f"{where}: {len(frames)} frame numbers for {len(labels)} label images")
    num_frames = num_frames or max(frames) + 1
    _, h, w = labels.shape
    ids = [int(i) for i in np.unique(labels) if i > 0]
    traj = Trajectory(width=w, height=h, num_frames=num_frames, caption=caption, source=source)
    for oid in ids:
        obj = ObjectTrack(id=oid, label=(labels_by_id or {}).get(oid, ""))
        for t, label in zip(frames, labels):
            m = label == oid
            obj.set_mask(t, m)
            box = mask_box(m)
            if box is not None:
                obj.boxes[t] = box
        traj.objects.append(obj)
    return traj


def _read_label_png(path: Path) -> np.ndarray:
    """A label PNG -> int64 (H, W) object ids: palette, grey and 16-bit PNGs give the index / value
    (`io.read_labels`); RGB PNGs (such as rendered `mask` maps) are read back through the fixed
    palette."""
    from ..io import read_labels
    from .palette import PALETTE

    try:
        arr = read_labels(path, TrajectoryError, "mask PNG")
    except TrajectoryError as e:
        raise TrajectoryError(str(e).replace("unreadable mask PNG", "unreadable PNG")) from None
    if arr.ndim == 2:
        return arr.astype(np.int64)
    # RGB: map each colour to its palette index
    key = (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]
    palette_keys = (PALETTE[:, 0].astype(np.int64) << 16) | (PALETTE[:, 1].astype(np.int64) << 8) \
        | PALETTE[:, 2]
    colours, inverse = np.unique(key, return_inverse=True)
    index = np.full(len(colours), -1, dtype=np.int64)
    for i, c in enumerate(colours):
        hit = np.flatnonzero(palette_keys == c)
        if len(hit):
            index[i] = hit[0]
        else:
            y, x = np.argwhere(key == c)[0]
            raise TrajectoryError(
                f"{path}: pixel (x={x}, y={y}) has colour {tuple(int(v) for v in arr[y, x])}, which "
                "is not an object colour of the palette"
            )
    return index[inverse.reshape(key.shape)]


def _frame_number(path: Path, i: int) -> int:
    """The frame a mask PNG is for: the last number in its name (00005.png, frame_5.png), else its
    place in the sorted listing."""
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else i


def from_mask_frames(folder: str | os.PathLike, num_frames: int | None = None, fill: str = "shift",
                     annotation: str = "auto") -> Trajectory:
    """Read a DAVIS-style folder of palette PNGs (one per annotated frame, named by frame number such
    as 00000.png, pixel value = object id; 16-bit and grey PNGs: the value) into a mask trajectory.

    Frames without a PNG are filled (`fill`: shift, box, hold; `annotation`: auto, complete or
    incremental; see `trajectory.sparse`); with `fill="none"` they have no mask. `num_frames` defaults to the last annotated frame + 1. RGB PNGs
    whose colours are palette colours (rendered `mask` maps) are read too. A PNG whose size differs
    from the others by rounding (at most 1% or 2 pixels, as in some DAVIS-style sets) is resized to
    theirs with nearest neighbour, with a warning."""
    from .sparse import ANNOTATIONS, FILLS, fill_label_frames

    import warnings

    import cv2

    folder = Path(folder)
    if fill not in FILLS:
        raise TrajectoryError(f"{folder}: unknown fill {fill!r}: expected one of {', '.join(FILLS)}")
    if annotation not in ANNOTATIONS:
        raise TrajectoryError(f"{folder}: unknown annotation {annotation!r}: expected one of {', '.join(ANNOTATIONS)}")
    if not folder.is_dir():
        raise TrajectoryError(f"{folder}: not a folder of mask PNGs")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise TrajectoryError(f"{folder}: no PNG masks found")
    frames = [_frame_number(p, i) for i, p in enumerate(files)]
    if len(set(frames)) != len(frames):
        dup = next(t for t in frames if frames.count(t) > 1)
        names = [p.name for p, t in zip(files, frames) if t == dup]
        raise TrajectoryError(f"{folder}: {' and '.join(names)} are both frame {dup}")
    if max(frames) >= MAX_FRAMES:  # 00000.png and 99999.png: a 100000-frame spec no command takes
        last = files[frames.index(max(frames))]
        raise TrajectoryError(f"{last}: frame {max(frames)} is beyond the limit of {MAX_FRAMES} frames "
                              "(docs/limits.md); are the files numbered by frame?")
    if num_frames is not None and max(frames) >= num_frames:
        last = files[frames.index(max(frames))]
        raise TrajectoryError(f"{last}: frame {max(frames)} outside 0..{num_frames - 1}")
    order = np.argsort(frames)
    files, frames = [files[i] for i in order], [frames[i] for i in order]
    labels = [_read_label_png(p) for p in files]

    # the most common size is the reference (on a tie, the first file's); rounding differences are resized away
    shapes = [a.shape for a in labels]
    h, w = max(set(shapes), key=lambda s: (shapes.count(s), -shapes.index(s)))
    for i, (p, a) in enumerate(zip(files, labels)):
        if a.shape == (h, w):
            continue
        ah, aw = a.shape
        if abs(ah - h) <= max(2, 0.01 * h) and abs(aw - w) <= max(2, 0.01 * w):
            warnings.warn(f"{p}: size {aw}x{ah} differs from the other masks' {w}x{h}; resized")
            resized = cv2.resize(a.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
            labels[i] = resized.astype(np.int64)
        else:
            raise TrajectoryError(f"{p}: size {aw}x{ah} differs from the other masks' {w}x{h}")
    traj = fill_label_frames(labels, frames, num_frames or max(frames) + 1, fill, source=str(folder),
                             annotation=annotation)
    if not traj.objects:
        raise TrajectoryError(f"{folder}: no objects (all masks are empty)")
    return traj
