"""Conversions between trajectory kinds, and rescaling together with the image."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import TrajectoryError
from .spec import Trajectory, decode_mask, encode_mask, rle_box

MAX_SPARSE_KEYS = 9


def masks_to_boxes(traj: Trajectory) -> Trajectory:
    """A box on every frame where an object has a non-empty mask (replacing any box given there);
    an empty mask removes the box (the object is absent on that frame)."""
    out = traj.copy()
    for o in out.objects:
        for t, rle in o.masks.items():
            box = rle_box(rle)
            if box is None:
                o.boxes.pop(t, None)
            else:
                o.boxes[t] = box
    return out


def interpolate_boxes(traj: Trajectory) -> Trajectory:
    """Key-frame boxes -> a box on every frame: linear between keys (position and size), held
    constant before the first and after the last key. Frames where the object has an explicit empty
    mask (it is absent) get no box."""
    out = traj.copy()
    for o in out.objects:
        absent = {t for t in o.masks if t not in o.boxes and o.mask_area(t) == 0}
        o.boxes = fill_boxes(o.boxes, out.num_frames, absent)
    return out


def key_boxes(o) -> dict[int, np.ndarray]:
    """An object's key boxes, plus a mask's tight box on frames with a non-empty mask but no box: the
    boxes `render` draws and interpolates between."""
    boxes = dict(o.boxes)
    for t, rle in o.masks.items():
        if t not in boxes:
            box = rle_box(rle)
            if box is not None:
                boxes[t] = box
    return boxes


def fill_boxes(boxes: dict[int, np.ndarray], num_frames: int, absent=()) -> dict[int, np.ndarray]:
    """Key boxes -> a box on every frame 0..num_frames-1 except `absent` ones: linear between keys,
    held before the first and after the last. Returns a new dict (the key boxes themselves kept)."""
    if not boxes:
        return {}
    keys = sorted(boxes)
    values = np.stack([boxes[t] for t in keys])
    frames = np.arange(num_frames)
    dense = np.stack([np.interp(frames, keys, values[:, j]) for j in range(4)], axis=1)
    out = {t: dense[t] for t in range(num_frames) if t not in absent}
    out.update(boxes)
    return out


def sparsify(traj: Trajectory, num_keys: int | None = None, max_keys: int = MAX_SPARSE_KEYS,
             mode: str = "even", seed: int | None = None) -> Trajectory:
    """Boxes on every frame -> boxes on a few key frames: frame 0 (kept with its mask) plus `num_keys`
    other frames (1..max_keys, random when None), chosen evenly or at random. Other masks are dropped.
    Missing boxes are first filled from masks and interpolation."""
    if not 1 <= max_keys <= MAX_SPARSE_KEYS:
        raise TrajectoryError(f"max_keys must be 1..{MAX_SPARSE_KEYS}, got {max_keys}")
    rng = np.random.default_rng(seed)
    if num_keys is None:
        num_keys = int(rng.integers(1, max_keys + 1))
    if not 1 <= num_keys <= max_keys:
        raise TrajectoryError(f"num_keys must be 1..{max_keys}, got {num_keys}")
    num_keys = min(num_keys, traj.num_frames - 1)
    candidates = np.arange(1, traj.num_frames)
    if mode == "even":
        # evenly spaced over 1..T-1, always including the last frame
        keys = np.unique(np.round(np.linspace(traj.num_frames - 1, 0, num_keys + 1)[:-1]).astype(int))
    elif mode == "random":
        keys = np.sort(rng.choice(candidates, size=num_keys, replace=False))
    else:
        raise TrajectoryError(f"unknown sparsify mode {mode!r} (even or random)")
    keep = {0, *(int(t) for t in keys)}
    dense = interpolate_boxes(masks_to_boxes(traj))
    out = dense.copy()
    for o in out.objects:
        o.boxes = {t: b for t, b in o.boxes.items() if t in keep}
        o.masks = {t: m for t, m in o.masks.items() if t == 0}
    return out


# ------------------------------------------------------------------------------- geometry


def fit_transform(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> tuple[float, float, float]:
    """Resize so the source covers the target, then centre-crop: returns (scale, offset_x, offset_y)
    with dst = src * scale - offset."""
    (sw, sh), (dw, dh) = src_wh, dst_wh
    scale = max(dw / sw, dh / sh)
    return scale, (sw * scale - dw) / 2.0, (sh * scale - dh) / 2.0


def _scaled_size(src_wh, scale) -> tuple[int, int]:
    return max(1, int(math.ceil(src_wh[0] * scale - 1e-6))), max(1, int(math.ceil(src_wh[1] * scale - 1e-6)))


def _resize_crop_one(image: np.ndarray, dst_wh, interpolation) -> np.ndarray:
    h, w = image.shape[:2]
    if (w, h) == tuple(dst_wh):
        return image
    scale, ox, oy = fit_transform((w, h), dst_wh)
    rw, rh = _scaled_size((w, h), scale)
    resized = cv2.resize(image, (rw, rh), interpolation=interpolation)
    if resized.ndim < image.ndim:  # cv2 drops a single channel axis
        resized = resized[..., None]
    x, y = _crop_origin((rw, rh), dst_wh, ox, oy)
    return resized[y:y + dst_wh[1], x:x + dst_wh[0]]


def _crop_origin(resized_wh, dst_wh, ox: float, oy: float) -> tuple[int, int]:
    x = min(max(int(round(ox)), 0), resized_wh[0] - dst_wh[0])
    y = min(max(int(round(oy)), 0), resized_wh[1] - dst_wh[1])
    return x, y


def resize_crop(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize so the frame covers `size` = (W, H), then centre-crop; the same transform as `rescale`
    applies to a trajectory, so an image and its trajectory stay aligned.

    `image`: an image (H, W, C) or (H, W), a video (T, H, W, C), or bool masks (H, W) / (T, H, W).
    Images are resized with area averaging (`nearest=True`: nearest neighbour); bool masks always
    with nearest neighbour. Returns the same dtype and layout at the new size."""
    size = (int(size[0]), int(size[1]))
    image = np.asarray(image)
    if image.dtype == bool:
        as_uint8 = image.astype(np.uint8)
        if image.ndim == 3:
            return np.stack([_resize_crop_one(m, size, cv2.INTER_NEAREST) for m in as_uint8]).astype(bool)
        return _resize_crop_one(as_uint8, size, cv2.INTER_NEAREST).astype(bool)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    if image.ndim == 4:
        return np.stack([_resize_crop_one(f, size, interp) for f in image])
    return _resize_crop_one(image, size, interp)


def rescale(traj: Trajectory, size: tuple[int, int]) -> Trajectory:
    """The trajectory of the same video resized to cover `size` = (W, H) and centre-cropped. Boxes are
    scaled, shifted and clipped to the frame (a box that leaves the frame entirely is dropped); masks
    are resized with nearest neighbour and cropped exactly like `resize_crop` crops the image."""
    size = (int(size[0]), int(size[1]))
    if size == traj.size:
        return traj.copy()
    src = traj.size
    scale, ox, oy = fit_transform(src, size)
    rw, rh = _scaled_size(src, scale)
    x, y = _crop_origin((rw, rh), size, ox, oy)
    out = traj.copy()
    out.width, out.height = size
    for o in out.objects:
        boxes = {}
        for t, b in o.boxes.items():
            nb = np.array([b[0] * rw / src[0] - x, b[1] * rh / src[1] - y,
                           b[2] * rw / src[0] - x, b[3] * rh / src[1] - y])
            nb = np.clip(nb, 0, [size[0], size[1], size[0], size[1]])
            if nb[2] - nb[0] > 1e-6 and nb[3] - nb[1] > 1e-6:
                boxes[t] = nb
        o.boxes = boxes
        o.masks = {t: encode_mask(_resize_crop_one(decode_mask(r).astype(np.uint8), size,
                                                   cv2.INTER_NEAREST).astype(bool))
                   for t, r in o.masks.items()}
    return out


# ---------------------------------------------------------------------------------------- frame counts


def valid_frame_counts(n: int) -> tuple[int | None, int]:
    """The frame counts 4k + 1 (what the video VAE makes) around `n`: (the largest at most n, None
    below 1; the smallest above n)."""
    low = n - (n - 1) % 4 if n >= 1 else None
    return low, (low + 4 if low is not None else 1)


def frames_hint(n: int, how: str = "use --frames", trim: bool = True) -> str | None:
    """What to do with a trajectory of `n` frames that generation cannot make as it is (not 4k + 1,
    or a single frame), e.g. '14 frames is not 4k + 1, as generation needs: use --frames 17 (the last
    frame held) or 13 (trimmed)'; None when `n` is fine."""
    if n > 1 and (n - 1) % 4 == 0:
        return None
    if n == 1:
        return f"1 frame: a still, not a video; {how} 17 (or 5, 9, ..., 49: 4k + 1) to hold it on more frames"
    low, high = valid_frame_counts(n)
    also = f" or {low} (trimmed)" if trim and low and low > 1 else ""
    return f"{n} frames is not 4k + 1, as generation needs: {how} {high} (the last frame held){also}"


def with_num_frames(traj: Trajectory, num_frames: int) -> Trajectory:
    """The trajectory on `num_frames` frames: trimmed (later keys dropped; an object moving between
    keys across the cut gets its interpolated box on the new last frame, or on the last one it is
    present on where empty masks say it is absent, so `box` maps are the first frames of the old ones),
    or padded with its last frame held (each object's mask and box on the last frame, where it has
    them, copied onto the new frames)."""
    if num_frames < 1:
        raise TrajectoryError(f"{traj.where()}: frame count must be at least 1, got {num_frames}")
    out = traj.copy()
    last = traj.num_frames - 1
    out.num_frames = num_frames
    cut = num_frames - 1
    for o in out.objects:
        keys = key_boxes(o)  # what `render` interpolates between: key boxes and non-empty masks
        if num_frames < traj.num_frames and any(t > cut for t in keys):
            dense = fill_boxes(keys, traj.num_frames, {t for t in o.masks if t not in keys})
            end = max((t for t in dense if t <= cut), default=None)  # its last frame present
            if end is not None and end not in keys:
                o.boxes[end] = dense[end]
        o.boxes = {t: b for t, b in o.boxes.items() if t < num_frames}
        o.masks = {t: m for t, m in o.masks.items() if t < num_frames}
        for t in range(last + 1, num_frames):
            if last in o.masks:
                o.masks[t] = dict(o.masks[last])
            if last in o.boxes:
                o.boxes[t] = o.boxes[last].copy()
    return out
