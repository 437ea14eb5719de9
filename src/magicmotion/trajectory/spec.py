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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import MediaError, TrajectoryError

SPEC_VERSION = 1


def encode_mask(mask: np.ndarray) -> dict:
    """bool/uint8 (H, W) -> COCO RLE {"size": [h, w], "counts": bytes}."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode_mask(rle: dict) -> np.ndarray:
    """COCO RLE -> bool (H, W)."""
    return mask_utils.decode(rle).astype(bool)


@dataclass
class ObjectTrack:
    """One controlled object: key-frame boxes (x0, y0, x1, y1 in pixels) and RLE masks by frame."""

    id: int
    label: str = ""
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    masks: dict[int, dict] = field(default_factory=dict)

    def mask(self, frame: int) -> np.ndarray | None:
        rle = self.masks.get(frame)
        return None if rle is None else decode_mask(rle)

    def set_mask(self, frame: int, mask: np.ndarray) -> None:
        self.masks[frame] = encode_mask(mask)

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
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise TrajectoryError(f"{where}: '{name}' must be a positive integer, got {value!r}")
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


def _parse_frame(key, where: str, object_id) -> int:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    raise TrajectoryError(f"{where}: object {object_id}: key frame {key!r} is not an integer")


def _read_mask_png(path: Path, where: str, object_id, frame: int) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise TrajectoryError(f"{where}: object {object_id} frame {frame}: mask file {path} not found")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise TrajectoryError(
            f"{where}: object {object_id} frame {frame}: mask {path} is not a readable PNG"
        )
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return mask != 0


def _parse_mask(value, base_dir: Path, where: str, object_id, frame: int) -> dict:
    if isinstance(value, str):
        return encode_mask(_read_mask_png(base_dir / value, where, object_id, frame))
    if isinstance(value, dict) and "size" in value and "counts" in value:
        size, counts = value["size"], value["counts"]
        ok_size = (
            isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and v > 0 for v in size)
        )
        if not ok_size:
            raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE size {size!r}")
        if isinstance(counts, list):  # uncompressed RLE
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != size[0] * size[1]:
                raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE counts")
            rle = mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        elif isinstance(counts, str):
            rle = {"size": list(size), "counts": counts.encode("ascii")}
        else:
            raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE counts")
        try:
            decoded = mask_utils.decode(rle)
        except Exception as e:  # pycocotools raises plain errors on corrupt strings
            raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE ({e})") from None
        if decoded.shape != (size[0], size[1]):
            raise TrajectoryError(f"{where}: object {object_id} frame {frame}: bad RLE")
        return encode_mask(decoded)
    raise TrajectoryError(
        f"{where}: object {object_id} frame {frame}: a mask must be a PNG path or "
        f'{{"size": [h, w], "counts": "..."}}'
    )


def from_dict(data: dict, base_dir: str | Path = ".", source: str = "") -> Trajectory:
    """Build a validated Trajectory from a parsed spec; mask paths are relative to `base_dir`."""
    where = source or "trajectory"
    base_dir = Path(base_dir)
    if not isinstance(data, dict):
        raise TrajectoryError(f"{where}: a spec must be a JSON object")
    if data.get("version") != SPEC_VERSION:
        raise TrajectoryError(
            f"{where}: unsupported version {data.get('version')!r} (expected {SPEC_VERSION})"
        )
    for key in ("width", "height", "num_frames"):
        if key not in data:
            raise TrajectoryError(f"{where}: missing '{key}'")
    objects_data = data.get("objects")
    if not isinstance(objects_data, list) or not objects_data:
        raise TrajectoryError(f"{where}: no objects")
    traj = Trajectory(
        width=data["width"], height=data["height"], num_frames=data["num_frames"],
        caption=str(data.get("caption", "")), source=source,
    )
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
            obj.boxes[t] = np.asarray(box, dtype=np.float64)
        for key, value in masks.items():
            t = _parse_frame(key, where, oid)
            obj.masks[t] = _parse_mask(value, base_dir, where, oid, t)
        traj.objects.append(obj)
    return traj.validate()


def load(path: str | os.PathLike) -> Trajectory:
    """Read a JSON trajectory spec (mask paths relative to the spec's folder)."""
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TrajectoryError(f"{path}: malformed JSON ({e})") from None
    except UnicodeDecodeError:
        raise TrajectoryError(f"{path}: not a text file") from None
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


def save(traj: Trajectory, path: str | os.PathLike) -> Path:
    """Write `traj` as a JSON spec, atomically."""
    from ..io import atomic_path

    path = Path(path)
    text = json.dumps(to_dict(traj), indent=1)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


# ------------------------------------------------------------------------- masks as label images


def from_label_masks(labels: np.ndarray, caption: str = "", labels_by_id: dict | None = None,
                     frames: list[int] | None = None, num_frames: int | None = None,
                     source: str = "") -> Trajectory:
    """Label images (T, H, W), value = object id, -> a trajectory with a mask on each given frame for
    every id present anywhere, and a box wherever the mask is not empty.

    `frames` gives the frame index of each label image (default 0..T-1)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise TrajectoryError(f"{source or 'labels'}: label masks must be (T, H, W), got {labels.shape}")
    frames = list(range(len(labels))) if frames is None else list(frames)
    num_frames = num_frames or (max(frames) + 1 if frames else 0)
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


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight box [x0, y0, x1, y1) around a bool mask, or None when it is empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if len(ys) == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float64)


def from_mask_frames(folder: str | os.PathLike, num_frames: int | None = None) -> Trajectory:
    """Read a DAVIS-style folder of palette PNGs (one per annotated frame, named by frame number,
    pixel value = object id) into a mask trajectory."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise TrajectoryError(f"{folder}: not a folder of mask PNGs")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise TrajectoryError(f"{folder}: no PNG masks found")
    frames, labels = [], []
    for i, p in enumerate(files):
        frames.append(int(p.stem) if p.stem.isdigit() else i)
        try:
            with Image.open(p) as im:
                if im.mode not in ("P", "L", "I", "I;16", "1"):
                    raise TrajectoryError(
                        f"{p}: mode {im.mode}: expected a palette or grey PNG (value = object id)"
                    )
                arr = np.array(im)
        except (OSError, SyntaxError) as e:
            raise TrajectoryError(f"{p}: unreadable PNG ({e})") from None
        if labels and arr.shape != labels[0].shape:
            raise TrajectoryError(f"{p}: size {arr.shape[::-1]} differs from {files[0].name}")
        labels.append(arr.astype(np.int64))
    if num_frames is not None and max(frames) >= num_frames:
        raise TrajectoryError(f"{folder}: frame {max(frames)} outside 0..{num_frames - 1}")
    traj = from_label_masks(np.stack(labels), frames=frames, num_frames=num_frames, source=str(folder))
    if not traj.objects:
        raise TrajectoryError(f"{folder}: no objects (all masks are empty)")
    return traj
