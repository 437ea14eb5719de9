"""The trajectory spec: objects with key-frame boxes and masks, read from and written to JSON.

A spec (version 1) looks like::

    {"version": 1, "width": 720, "height": 480, "num_frames": 49, "caption": "...",
     "objects": [{"id": 1, "label": "dog",
                  "boxes": {"0": [x0, y0, x1, y1], "24": [...]},
                  "masks": {"0": "masks/dog_0.png" | {"size": [h, w], "counts": "..."}}}]}

Masks are kept in memory as COCO RLE (pycocotools). See docs/trajectory-format.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import TrajectoryError
from ..limits import (MAX_COORD, MAX_FRAMES, MAX_OBJECTS, check_number, check_size, check_video_size,
                      read_json)

SPEC_VERSION = 1


def encode_mask(mask: np.ndarray) -> dict:
    """bool/uint8 (H, W) -> COCO RLE {"size": [h, w], "counts": bytes}."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode_mask(rle: dict) -> np.ndarray:
    """COCO RLE -> bool (H, W)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle_counts(rle)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate: zeros first
    return np.repeat(values, counts).reshape(w, h).T


def rle_counts(rle: dict) -> np.ndarray:
    """The run lengths of a COCO RLE (zeros first, then ones, alternating; column-major order) as
    int64 (n,). Reads compressed strings without pycocotools, which does not check them: a string
    that is not well formed, or whose runs do not add up to h * w, raises ValueError."""
    return rle_runs([rle])[0]


def rle_runs(rles: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The run lengths of several COCO RLEs at once: (int64 runs of all masks one after the other,
    int64 number of runs of each mask). Raises ValueError like `rle_counts`."""
    blobs = []
    for rle in rles:
        counts = rle["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        elif not isinstance(counts, bytes):  # uncompressed: a list of run lengths
            if any(int(v) < 0 for v in counts):
                raise ValueError("negative run length")
            h, w = (int(v) for v in rle["size"])
            uncompressed = {"size": [h, w], "counts": [int(v) for v in counts]}
            counts = mask_utils.frPyObjects(uncompressed, h, w)["counts"]
        blobs.append(counts)
    lengths = np.array([len(b) for b in blobs], dtype=np.int64)
    c = np.frombuffer(b"".join(blobs), dtype=np.uint8).astype(np.int64) - 48
    if len(c) and (c.min() < 0 or c.max() > 63):
        raise ValueError("counts string has characters outside '0'..'o'")
    string_end = np.cumsum(lengths)
    ends_number = (c & 0x20) == 0  # the last character of each number has no continuation bit
    if not ends_number[string_end[lengths > 0] - 1].all():
        raise ValueError("counts string ends inside a number")
    last = np.flatnonzero(ends_number)
    first = np.concatenate(([0], last[:-1] + 1))[:len(last)].astype(np.int64)  # none for empty strings
    n_chars = last - first + 1
    if len(n_chars) and n_chars.max() > 12:
        raise ValueError("counts string has a number that is too long")
    # 5 bits per character, least significant first; a set 0x10 bit on the last one means negative
    shift = 5 * (np.arange(len(c)) - np.repeat(first, n_chars))
    x = np.add.reduceat((c & 0x1F) << shift, first)
    negative = (c[last] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * n_chars[negative])
    # numbers per mask; from the fourth on, each is a delta from the run two places back, so runs
    # of each parity (after the first) are running sums within their mask
    per_mask = np.bincount(np.searchsorted(string_end, last, side="right"), minlength=len(rles))
    mask_start = np.concatenate(([0], np.cumsum(per_mask)[:-1]))[:len(rles)].astype(np.int64)
    m = np.arange(len(x)) - np.repeat(mask_start, per_mask)  # index within the mask
    runs = x.copy()
    for parity in (0, 1):
        chain = (m % 2 == parity) & (m > 0)
        total = np.concatenate(([0], np.cumsum(np.where(chain, x, 0))))
        runs[chain] = (total[1:] - np.repeat(total[mask_start], per_mask))[chain]
    if len(runs) and runs.min() < 0:
        raise ValueError("negative run length")
    covered = np.add.reduceat(np.concatenate((runs, [0])), mask_start)[:len(rles)] * (per_mask > 0)
    pixels = np.array([int(r["size"][0]) * int(r["size"][1]) for r in rles], dtype=np.int64)
    bad = np.flatnonzero(covered != pixels)
    if len(bad):
        i = bad[0]
        raise ValueError(f"runs cover {covered[i]} pixels, the mask has {pixels[i]}")
    return runs, per_mask


def rle_box(rle: dict) -> np.ndarray | None:
    """Tight box [x0, y0, x1, y1) around an RLE mask (without decoding it), or None when empty."""
    if mask_utils.area(rle) == 0:
        return None
    x, y, w, h = mask_utils.toBbox(rle)
    return np.array([x, y, x + w, y + h], dtype=np.float64)


@dataclass
class ObjectTrack:
    """One controlled object: key-frame boxes (x0, y0, x1, y1 in pixels) and RLE masks by frame."""

    id: int
    label: str = ""
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    masks: dict[int, dict] = field(default_factory=dict)

    def mask(self, frame: int) -> np.ndarray | None:
        """The bool (H, W) mask on `frame`, or None when the frame has no mask."""
        rle = self.masks.get(frame)
        return None if rle is None else decode_mask(rle)

    def set_mask(self, frame: int, mask: np.ndarray) -> None:
        self.masks[frame] = encode_mask(mask)

    @classmethod
    def from_masks(cls, object_id: int, label: str, masks: np.ndarray) -> "ObjectTrack":
        """An object with a mask on every frame of bool `masks` (T, H, W) and a box wherever the mask
        is not empty (a tracker's output)."""
        obj = cls(id=object_id, label=label)
        for f, m in enumerate(masks):
            obj.set_mask(f, m)
            box = mask_box(m)
            if box is not None:
                obj.boxes[f] = box
        return obj

    def mask_area(self, frame: int) -> int:
        rle = self.masks.get(frame)
        return 0 if rle is None else int(mask_utils.area(rle))


@dataclass
class Trajectory:
    """Objects moving over `num_frames` frames of a `width` x `height` video."""

    width: int
    height: int
    num_frames: int
    objects: list[ObjectTrack] = field(default_factory=list)
    caption: str = ""
    source: str = ""  # where it was read from, for error messages

    @property
    def ids(self) -> list[int]:
        return [o.id for o in self.objects]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def object(self, object_id: int) -> ObjectTrack:
        for o in self.objects:
            if o.id == object_id:
                return o
        raise TrajectoryError(f"{self.where()}: no object with id {object_id}")

    def copy(self) -> "Trajectory":
        return copy.deepcopy(self)

    def where(self) -> str:
        return self.source or "trajectory"

    def validate(self) -> "Trajectory":
        """Check ids, frames, boxes and mask sizes; raise TrajectoryError naming what is wrong."""
        where = self.where()
        for name in ("width", "height", "num_frames"):
            _check_positive_int(getattr(self, name), name, where)
        _check_limits(self.width, self.height, self.num_frames, len(self.objects), where)
        if not self.objects:
            raise TrajectoryError(f"{where}: no objects")
        seen = set()
        for o in self.objects:
            if not isinstance(o.id, (int, np.integer)) or isinstance(o.id, bool) or o.id <= 0:
                raise TrajectoryError(f"{where}: object id {o.id!r} must be a positive integer")
            if o.id in seen:
                raise TrajectoryError(f"{where}: duplicate object id {o.id}")
            seen.add(o.id)
            for t, box in o.boxes.items():
                self._check_frame(o.id, t)
                x0, y0, x1, y1 = (float(v) for v in box)
                if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
                    raise TrajectoryError(
                        f"{where}: object {o.id} frame {t}: box {[x0, y0, x1, y1]} must have "
                        f"0 <= x0 < x1 <= {self.width} and 0 <= y0 < y1 <= {self.height}"
                    )
            for t, rle in o.masks.items():
                self._check_frame(o.id, t)
                h, w = rle["size"]
                if (w, h) != (self.width, self.height):
                    raise TrajectoryError(
                        f"{where}: object {o.id} frame {t}: mask is {w}x{h}, "
                        f"the trajectory is {self.width}x{self.height}"
                    )
        return self

    def _check_frame(self, object_id: int, t: int) -> None:
        if not 0 <= t < self.num_frames:
            raise TrajectoryError(
                f"{self.where()}: object {object_id}: key frame {t} outside 0..{self.num_frames - 1}"
            )


# ---------------------------------------------------------------------------------------- reading


def _check_positive_int(value, name: str, where: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise TrajectoryError(f"{where}: '{name}' must be a positive integer, got {_short(value)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_limits(width: int, height: int, num_frames: int, objects: int, where: str) -> None:
    """Size, frames and objects within docs/limits.md, before anything of that size is allocated."""
    check_size(width, height, where, TrajectoryError)
    if num_frames > MAX_FRAMES:
        raise TrajectoryError(f"{where}: 'num_frames' {_short(num_frames)} is beyond the limit of {MAX_FRAMES} "
                              "(docs/limits.md)")
    if objects > MAX_OBJECTS:
        raise TrajectoryError(f"{where}: {objects} objects, beyond the limit of {MAX_OBJECTS} (docs/limits.md)")
    check_video_size(width, height, num_frames, where, TrajectoryError)


_FRAME_KEY = re.compile(r"-?[0-9]{1,12}")


def _parse_frame(key, where: str, object_id) -> int:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and _FRAME_KEY.fullmatch(key.strip()):  # ASCII digits only: not "²", "--1"
        return int(key)
    raise TrajectoryError(f"{where}: object {object_id}: key frame {_short(key)} is not an integer")


def _read_mask_png(path: Path, where: str, object_id, frame: int) -> np.ndarray:
    """A mask image -> bool (H, W): non-zero = object (for colour images any channel non-zero, and
    where there is an alpha channel, also not transparent). Read by `io.read_labels` (16-bit,
    palette, EXIF orientation...)."""
    from ..io import read_labels

    if not path.is_file():
        raise TrajectoryError(f"{where}: object {object_id} frame {frame}: mask file {path} not found")
    try:
        arr = read_labels(path, TrajectoryError, "mask")
    except TrajectoryError as e:
        prefix = f"{path}: unreadable mask"  # io.opened_image's message; the path may hold the words too
        if not str(e).startswith(prefix):
            raise
        reason = str(e)[len(prefix):].strip()
        raise TrajectoryError(
            f"{where}: object {object_id} frame {frame}: mask {path} is not a readable image {reason}"
        ) from None
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr != 0


def _parse_mask(value, base_dir: Path | None, where: str, object_id, frame: int, pending: list | None = None) -> dict:
    """A mask value of a spec (a PNG path or RLE) -> COCO RLE, checked. With `pending`, compressed RLE
    strings are appended there (rle, object id, frame) for one batched check by the caller
    (`_check_pending`): a spec's hundreds of masks are checked in one pass."""
    if isinstance(value, str) and base_dir is None:  # nothing is said about the file: not even if it exists
        raise TrajectoryError(f"{where}: object {object_id} frame {frame}: mask file paths are not accepted here; "
                              'give masks inline as RLE {"size": [h, w], "counts": "..."}')
    if isinstance(value, str):  # relative to the spec's folder, and staying in it (paths.contained)
        from ..paths import contained

        path = contained(base_dir, value, f"{where}: object {object_id} frame {frame}", "mask file", TrajectoryError)
        return encode_mask(_read_mask_png(path, where, object_id, frame))
    if isinstance(value, dict) and "size" in value and "counts" in value:
        size, counts = value["size"], value["counts"]
        ok_size = (
            isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        )
        if not ok_size:
            raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE size {_short(size)}")
        check_size(size[1], size[0], f"{where}: object {object_id} frame {frame}", TrajectoryError, "RLE size")
        pixels = size[0] * size[1]
        ok_counts = isinstance(counts, str) or (
            isinstance(counts, list) and len(counts) <= pixels + 1
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= pixels for c in counts)
        )
        if not ok_counts:
            raise TrajectoryError(
                f"{where}: object {object_id} frame {frame}: bad RLE: 'counts' must be a string "
                "(compressed) or a list of integers in 0..h*w"
            )
        try:
            if isinstance(counts, str):
                rle = {"size": list(size), "counts": counts.encode("ascii")}
                if pending is not None:
                    pending.append((rle, object_id, frame))
                    return rle
                rle_counts(rle)
            else:  # uncompressed RLE
                rle_counts({"size": size, "counts": counts})
                rle = mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        except (ValueError, UnicodeEncodeError) as e:
            raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE ({e})") from None
        return rle
    raise TrajectoryError(
        f"{where}: object {object_id} frame {frame}: a mask must be a PNG path or "
        f'{{"size": [h, w], "counts": "..."}}'
    )


def _check_pending(pending: list, where: str) -> None:
    """Check compressed RLE masks (rle, object id, frame) in one `rle_runs` pass; where it fails,
    mask by mask, naming the first bad one."""
    if not pending:
        return
    try:
        rle_runs([rle for rle, _, _ in pending])
        return
    except ValueError:
        pass
    for rle, object_id, frame in pending:
        try:
            rle_counts(rle)
        except ValueError as e:
            raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE ({e})") from None


def from_dict(data: dict, base_dir: str | Path = ".", source: str = "") -> Trajectory:
    """Build a validated Trajectory from a parsed spec; mask paths are relative to `base_dir`
    (`base_dir=None`: no mask files at all, masks inline as RLE only, as for specs sent to a server)."""
    where = source or "trajectory"
    base_dir = None if base_dir is None else Path(base_dir)
    if not isinstance(data, dict):
        raise TrajectoryError(f"{where}: a spec must be a JSON object")
    version = data.get("version")
    if isinstance(version, bool) or version != SPEC_VERSION:
        raise TrajectoryError(
            f"{where}: unsupported version {version!r} (expected {SPEC_VERSION})"
        )
    for key in ("width", "height", "num_frames"):
        if key not in data:
            raise TrajectoryError(f"{where}: missing '{key}'")
        _check_positive_int(data[key], key, where)
    objects_data = data.get("objects")
    if objects_data is not None and not isinstance(objects_data, list):
        raise TrajectoryError(f"{where}: 'objects' must be a list")
    if not objects_data:
        raise TrajectoryError(f"{where}: no objects")
    _check_limits(data["width"], data["height"], data["num_frames"], len(objects_data), where)
    traj = Trajectory(
        width=data["width"], height=data["height"], num_frames=data["num_frames"],
        caption=str(data.get("caption", "")), source=source,
    )
    pending: list = []  # compressed RLE masks, checked together below
    for i, od in enumerate(objects_data):
        if not isinstance(od, dict) or "id" not in od:
            raise TrajectoryError(f"{where}: object #{i} has no 'id'")
        oid = od["id"]
        obj = ObjectTrack(id=oid, label=str(od.get("label", "")))
        boxes = od.get("boxes", {}) or {}
        masks = od.get("masks", {}) or {}
        if not isinstance(boxes, dict) or not isinstance(masks, dict):
            raise TrajectoryError(f"{where}: object {oid}: 'boxes' and 'masks' must map frame -> value")
        for key, box in boxes.items():
            t = _parse_frame(key, where, oid)
            if not (isinstance(box, (list, tuple)) and len(box) == 4
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
                raise TrajectoryError(f"{where}: object {oid} frame {t}: a box must be [x0, y0, x1, y1]")
            for v in box:
                check_number(v, "a box coordinate", f"{where}: object {oid} frame {t}", -MAX_COORD, MAX_COORD,
                             TrajectoryError)
            obj.boxes[t] = np.asarray(box, dtype=np.float64)
        for key, value in masks.items():
            t = _parse_frame(key, where, oid)
            obj.masks[t] = _parse_mask(value, base_dir, where, oid, t, pending)
        traj.objects.append(obj)
    _check_pending(pending, where)
    return traj.validate()


def load(path: str | os.PathLike) -> Trajectory:
    """Read a JSON trajectory spec (mask paths relative to the spec's folder)."""
    path = Path(path)
    data = read_json(path, TrajectoryError, "spec")
    return from_dict(data, base_dir=path.parent, source=str(path))


# ---------------------------------------------------------------------------------------- writing


def _number(v: float):
    v = float(v)
    return int(v) if v.is_integer() else round(v, 4)


def to_dict(traj: Trajectory) -> dict:
    """The JSON spec (version 1) of a trajectory, masks inline as compressed RLE strings."""
    objects = []
    for o in traj.objects:
        od = {"id": int(o.id)}
        if o.label:
            od["label"] = o.label
        od["boxes"] = {str(t): [_number(v) for v in o.boxes[t]] for t in sorted(o.boxes)}
        od["masks"] = {
            str(t): {"size": [int(s) for s in o.masks[t]["size"]], "counts": _counts_str(o.masks[t])}
            for t in sorted(o.masks)
        }
        objects.append(od)
    data = {"version": SPEC_VERSION, "width": int(traj.width), "height": int(traj.height),
            "num_frames": int(traj.num_frames)}
    if traj.caption:
        data["caption"] = traj.caption
    data["objects"] = objects
    return data


def _counts_str(rle: dict) -> str:
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


_NUMBER_LIST = re.compile(r"\[\n[-+\d.eE,\s]*\]")


def dumps(data: dict) -> str:
    """A spec dict as indented JSON text, with lists of numbers (boxes, sizes) on one line."""
    text = json.dumps(data, indent=1)
    return _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(0)[1:-1].split()) + "]", text) + "\n"


def save(traj: Trajectory, path: str | os.PathLike) -> Path:
    """Write `traj` as a JSON spec (masks inline as RLE), atomically."""
    from ..io import atomic_path

    path = Path(path)
    text = dumps(to_dict(traj))
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight box [x0, y0, x1, y1) around a bool mask, or None when it is empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if len(ys) == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float64)
