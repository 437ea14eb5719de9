"""Trajectories from point tracks: the output of a point tracker (CoTracker, TAPIR, ...) or points a
user follows by hand, turned into boxes (and, with a frame-0 mask, masks) of the spec.

Two inputs (docs/trajectory-format.md, "From point tracks"):

- a JSON file: `{"width", "height", "num_frames"?, "caption"?, "objects": [{"id", "label"?,
  "tracks": [[[x, y] | null, ...], ...], "visible"?: [[bool, ...], ...], "mask"?: PNG path | RLE}]}`,
  each track a list of one point per frame (null = not seen);
- arrays as point trackers write them: positions (T, N, 2) (also (1, T, N, 2)), visibility (T, N)
  (bool, or a probability > 0.5; optional), object ids (N,) (optional: one object), in a `.npz`
  (`tracks`, `visibility`, `ids`) or `.npy` files.

Per object and frame the box is the box around the points that are visible and inside the frame,
padded by `padding` of its width and height on each side and grown to at least `min_size` pixels,
clipped to the frame. A frame where every point is hidden but some lie inside the frame has no key
box (the object is occluded: render interpolates); a frame where the points are known and all lie
outside the frame gets an empty mask (the object has left: it is absent). With a frame-0 mask the
mask is moved on each frame by the mean motion of the points seen both there and on frame 0.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import TrajectoryError
from .spec import ObjectTrack, Trajectory, decode_mask, encode_mask, mask_box

MIN_SIZE = 16.0  # pixels: the smallest box side (a single tracked point gets a box this size)
PADDING = 0.05  # of the box's width / height, on each side


@dataclass
class TrackedObject:
    """One object's point tracks: points float (T, N, 2) (NaN where unknown), visible bool (T, N),
    and optionally its frame-0 mask (bool (H, W))."""

    id: int
    points: np.ndarray
    visible: np.ndarray
    label: str = ""
    mask: np.ndarray | None = None


@dataclass
class PointTracks:
    width: int
    height: int
    num_frames: int
    objects: list[TrackedObject] = field(default_factory=list)
    caption: str = ""
    source: str = ""


# ------------------------------------------------------------------------------------------ reading


def _where(source: str, obj=None, track=None, frame=None) -> str:
    parts = [source or "tracks"]
    if obj is not None:
        parts.append(f"object {obj}")
    if track is not None:
        parts.append(f"track {track}")
    if frame is not None:
        parts.append(f"frame {frame}")
    return parts[0] + (": " + " ".join(parts[1:]) if len(parts) > 1 else "")


def _check_points(points: np.ndarray, visible: np.ndarray, size: tuple[int, int], source: str, oid) -> None:
    """Visible points must have finite coordinates, and lie within a frame's size of the frame (a
    point farther out means the tracks are in other units or for another size)."""
    w, h = size
    bad = visible & ~np.isfinite(points).all(-1)
    if bad.any():
        t, n = np.argwhere(bad)[0]
        raise TrajectoryError(f"{_where(source, oid, n, t)}: point is {points[t, n].tolist()} (NaN or "
                              "infinite) but marked visible")
    x, y = points[..., 0], points[..., 1]
    far = visible & ((x < -w) | (x > 2 * w) | (y < -h) | (y > 2 * h))
    if far.any():
        t, n = np.argwhere(far)[0]
        raise TrajectoryError(
            f"{_where(source, oid, n, t)}: point ({x[t, n]:g}, {y[t, n]:g}) is far outside the {w}x{h} "
            "frame: are the tracks in pixels of a frame this size? (--frame-size WxH)")


def _read_json_mask(value, base_dir: Path, size, source: str, oid) -> np.ndarray:
    from .spec import _parse_mask

    rle = _parse_mask(value, base_dir, source, oid, 0)
    if tuple(int(v) for v in rle["size"]) != (size[1], size[0]):
        raise TrajectoryError(f"{_where(source, oid)}: mask is {rle['size'][1]}x{rle['size'][0]}, the "
                              f"tracks are {size[0]}x{size[1]}")
    return decode_mask(rle)


def load_tracks_json(path) -> PointTracks:
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise TrajectoryError(f"{src}: tracks file not found")
    from ..limits import read_json

    data = read_json(path, TrajectoryError, "tracks file")  # with the nesting and size limits
    if not isinstance(data, dict):
        raise TrajectoryError(f"{src}: expected a JSON object with 'width', 'height' and 'objects'")
    for key in ("width", "height"):
        if not isinstance(data.get(key), int) or isinstance(data.get(key), bool) or data[key] <= 0:
            raise TrajectoryError(f"{src}: '{key}' must be a positive integer, got {data.get(key)!r}")
    size = (data["width"], data["height"])
    objects = data.get("objects")
    if not isinstance(objects, list) or not objects:
        raise TrajectoryError(f"{src}: 'objects' must be a non-empty list")
    out = PointTracks(width=size[0], height=size[1], num_frames=0, caption=str(data.get("caption") or ""),
                      source=src)
    lengths = set()
    for i, o in enumerate(objects):
        oid = o.get("id", i + 1) if isinstance(o, dict) else i + 1
        if not isinstance(o, dict) or not isinstance(o.get("tracks"), list) or not o["tracks"]:
            raise TrajectoryError(f"{_where(src, oid)}: needs 'tracks', a non-empty list of tracks")
        if not isinstance(oid, int) or isinstance(oid, bool) or oid <= 0:
            raise TrajectoryError(f"{src}: object id {oid!r} must be a positive integer")
        tracks = o["tracks"]
        t = len(tracks[0]) if isinstance(tracks[0], list) else -1
        points = np.full((max(t, 0), len(tracks), 2), np.nan)
        visible = np.zeros((max(t, 0), len(tracks)), dtype=bool)
        for n, track in enumerate(tracks):
            if not isinstance(track, list) or len(track) != t or t == 0:
                raise TrajectoryError(f"{_where(src, oid, n)}: must be a list of {max(t, 1)} points "
                                      "(one per frame: [x, y] or null), like the object's first track")
            for f, p in enumerate(track):
                if p is None:
                    continue
                try:
                    x, y = (float(v) if v is not None else np.nan for v in p)
                except (TypeError, ValueError):
                    raise TrajectoryError(f"{_where(src, oid, n, f)}: point {p!r} is not [x, y]") from None
                points[f, n], visible[f, n] = (x, y), True
        if "visible" in o:
            vis = np.asarray(o["visible"], dtype=object)
            if vis.shape != (len(tracks), t) or not all(isinstance(v, bool) for v in vis.ravel()):
                raise TrajectoryError(f"{_where(src, oid)}: 'visible' must be {len(tracks)} lists of {t} "
                                      "true/false, one per track")
            visible &= vis.T.astype(bool)
        _check_points(points, visible, size, src, oid)
        mask = _read_json_mask(o["mask"], path.parent, size, src, oid) if o.get("mask") is not None else None
        out.objects.append(TrackedObject(id=oid, label=str(o.get("label") or ""), points=points,
                                         visible=visible, mask=mask))
        lengths.add(t)
    if len(lengths) > 1:
        raise TrajectoryError(f"{src}: objects have tracks of different lengths ({sorted(lengths)} frames)")
    out.num_frames = lengths.pop()
    if data.get("num_frames") is not None and data["num_frames"] != out.num_frames:
        raise TrajectoryError(f"{src}: 'num_frames' is {data['num_frames']!r} but the tracks have "
                              f"{out.num_frames} points each")
    if len({o.id for o in out.objects}) != len(out.objects):
        raise TrajectoryError(f"{src}: duplicate object ids")
    return out


def _load_array(path: Path, what: str) -> np.ndarray | dict[str, np.ndarray]:
    """A .npy array, or every array of a .npz (read here, so that an object array or a damaged
    member is this file's error, not a traceback later). Never unpickles."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                data = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise TrajectoryError(f"{path}: {what} file not found") from None
    except EOFError:  # a zero-byte file
        raise TrajectoryError(f"{path}: not a .npy/.npz array file (empty)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrajectoryError(f"{path}: not a .npy/.npz array file ({why})") from None
    for name, array in (data.items() if isinstance(data, dict) else [(what, data)]):
        if array.dtype.kind not in "biuf":
            raise TrajectoryError(f"{path}: {name} holds {array.dtype} values, expected numbers")
    return data


def _first_key(arrays, keys: tuple[str, ...]):
    return next((arrays[k] for k in keys if k in arrays), None)


def load_tracks_arrays(path, size: tuple[int, int], visibility=None, ids=None, labels: list[str] | None = None,
                       masks: np.ndarray | None = None, caption: str = "") -> PointTracks:
    """Point-tracker arrays -> PointTracks.

    path: `.npy` of positions (T, N, 2) or (1, T, N, 2), or `.npz` with `tracks` (or `pred_tracks`) and
    optionally `visibility` (`pred_visibility`, `visibles`) and `ids`. visibility, ids: arrays or `.npy`
    paths that override the file's. size: (W, H) of the frames the positions are in. labels: names of
    the objects in id order. masks: an int label image (H, W), value = object id, for frame-0 masks."""
    path = Path(path)
    src = str(path)
    data = _load_array(path, "tracks")
    if isinstance(data, dict):
        arrays = data
        points = _first_key(arrays, ("tracks", "pred_tracks", "points"))
        if points is None:
            raise TrajectoryError(f"{src}: no 'tracks' array (has {', '.join(sorted(arrays)) or 'none'})")
        visibility = visibility if visibility is not None else _first_key(
            arrays, ("visibility", "pred_visibility", "visibles", "visible"))
        ids = ids if ids is not None else arrays.get("ids")
    else:
        points = data
    if isinstance(visibility, (str, os.PathLike)):
        visibility = _load_array(Path(visibility), "visibility")
    if isinstance(ids, (str, os.PathLike)):
        ids = _load_array(Path(ids), "ids")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 4 and points.shape[0] == 1:
        points = points[0]
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] < 1 or points.shape[1] < 1:
        raise TrajectoryError(f"{src}: tracks must be (T, N, 2) (or (1, T, N, 2)), got {points.shape}")
    t, n = points.shape[:2]
    if visibility is None:
        visible = np.isfinite(points).all(-1)
    else:
        vis = np.asarray(visibility)
        if vis.ndim == 3 and vis.shape[0] == 1:
            vis = vis[0]
        if vis.ndim == 3 and vis.shape[-1] == 1:
            vis = vis[..., 0]
        if vis.shape != (t, n):
            raise TrajectoryError(f"{src}: visibility must be (T, N) = ({t}, {n}), got {vis.shape}")
        visible = vis > 0.5 if vis.dtype.kind == "f" else vis.astype(bool)
    if ids is None:
        ids = np.ones(n, dtype=np.int64)
    ids = np.asarray(ids)
    if ids.shape != (n,) or ids.dtype.kind not in "iu" or (ids <= 0).any():
        raise TrajectoryError(f"{src}: ids must be ({n},) positive integers, one object id per track")
    w, h = size
    out = PointTracks(width=int(w), height=int(h), num_frames=t, caption=caption, source=src)
    for k, oid in enumerate(sorted(int(i) for i in np.unique(ids))):
        sel = ids == oid
        _check_points(points[:, sel], visible[:, sel], size, src, oid)
        mask = None
        if masks is not None:
            labels_img = np.asarray(masks)
            if labels_img.shape != (h, w):
                raise TrajectoryError(f"{src}: the mask is {labels_img.shape[1]}x{labels_img.shape[0]}, "
                                      f"the tracks are {w}x{h}")
            values = [int(v) for v in np.unique(labels_img) if v > 0]
            mask = labels_img == oid
            if not mask.any() and len(values) == 1 and len(np.unique(ids)) == 1:
                mask = labels_img > 0  # one object, a plain 0 / 255 mask
            if not mask.any():
                mask = None  # this object has no frame-0 mask: boxes only
        out.objects.append(TrackedObject(id=oid, points=points[:, sel], visible=visible[:, sel],
                                         label=(labels or [])[k] if k < len(labels or []) else "", mask=mask))
    if masks is not None and all(o.mask is None for o in out.objects):
        raise TrajectoryError(f"{src}: the mask has no pixels of any object id "
                              f"({', '.join(str(o.id) for o in out.objects)})")
    return out


def load_tracks(path, size: tuple[int, int] | None = None, **kwargs) -> PointTracks:
    """A tracks JSON, or `.npy` / `.npz` arrays (which need `size` = (W, H); see load_tracks_arrays)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return load_tracks_json(path)
    if path.suffix.lower() not in (".npy", ".npz"):
        raise TrajectoryError(f"{path}: unknown tracks file: use .json, .npy or .npz")
    if size is None:
        raise TrajectoryError(f"{path}: arrays do not say the frame size: pass --frame-size WxH or --image")
    return load_tracks_arrays(path, size, **kwargs)


# --------------------------------------------------------------------------------------- conversion


def points_box(points: np.ndarray, size: tuple[int, int], padding: float = PADDING,
               min_size: float = MIN_SIZE) -> np.ndarray:
    """The box around points (P, 2), padded by `padding` of its width / height each side, grown about
    its centre to at least `min_size` on each side (at most the frame), shifted inside the frame."""
    w, h = size
    lo, hi = points.min(0), points.max(0)
    ext = (hi - lo) * (1 + 2 * padding)
    ext = np.minimum(np.maximum(ext, min_size), [w, h])
    centre = (lo + hi) / 2
    lo = np.clip(centre - ext / 2, 0, [w, h] - ext)
    return np.array([lo[0], lo[1], lo[0] + ext[0], lo[1] + ext[1]])


def shift_mask(mask: np.ndarray, d) -> np.ndarray:
    """A bool mask moved by d = (dx, dy) pixels (rounded), pixels moved past the edge dropped."""
    m = np.array([[1.0, 0.0, round(float(d[0]))], [0.0, 1.0, round(float(d[1]))]])
    h, w = mask.shape
    return cv2.warpAffine(mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST).astype(bool)


def tracks_to_trajectory(tracks: PointTracks, padding: float = PADDING, min_size: float = MIN_SIZE,
                         masks: bool = True) -> Trajectory:
    """Point tracks -> Trajectory: per object and frame a box around its visible points inside the
    frame; frames where the object has left the frame get an empty mask (absent); occluded frames no
    key. With a frame-0 mask (and `masks`), a mask on every frame: the frame-0 mask moved by the mean
    motion of the points seen on both frames (interpolated over frames with no such point)."""
    # finite (NaN passes every comparison below as false); a padding of 10 is already a box 21 times its
    # points'; a min_size beyond the frame's shorter side (but the default) makes every box the frame
    most = max(MIN_SIZE, min(tracks.width, tracks.height))
    if not (0 <= padding <= 10 and 1 <= min_size <= most):
        raise TrajectoryError(f"{tracks.source}: padding must be >= 0 (at most 10) and min_size >= 1 (at most "
                              f"{most:g}, the frame's shorter side), got {padding}, {min_size}")
    w, h = tracks.width, tracks.height
    traj = Trajectory(width=w, height=h, num_frames=tracks.num_frames, caption=tracks.caption,
                      source=tracks.source)
    for o in tracks.objects:
        x, y = o.points[..., 0], o.points[..., 1]
        finite = np.isfinite(o.points).all(-1)
        inside = finite & (x >= 0) & (x < w) & (y >= 0) & (y < h)
        seen = o.visible & inside  # (T, N)
        if not seen.any():
            raise TrajectoryError(f"{_where(tracks.source, o.id)}: no point is visible inside the {w}x{h} "
                                  "frame on any frame: nothing to make a box from")
        left = ~seen.any(1) & finite.any(1) & ~(finite & inside).any(1)  # known, all outside
        track = ObjectTrack(id=o.id, label=o.label)
        for t in range(tracks.num_frames):
            if seen[t].any():
                track.boxes[t] = points_box(o.points[t][seen[t]], (w, h), padding, min_size)
        if o.mask is not None and masks:
            if o.mask.shape != (h, w) or not o.mask.any():
                raise TrajectoryError(f"{_where(tracks.source, o.id)}: the frame-0 mask must be a non-empty "
                                      f"{w}x{h} mask")
            both = seen & seen[0]  # (T, N): seen here and on frame 0
            known = np.flatnonzero(both.any(1))
            if len(known) == 0:
                raise TrajectoryError(f"{_where(tracks.source, o.id)}: no point is visible on frame 0, so the "
                                      "frame-0 mask cannot be moved")
            d = np.stack([(o.points[t][both[t]] - o.points[0][both[t]]).mean(0) for t in known])
            frames = np.arange(tracks.num_frames)
            motion = np.stack([np.interp(frames, known, d[:, j]) for j in range(2)], axis=1)
            for t in frames:
                m = np.zeros((h, w), dtype=bool) if left[t] else shift_mask(o.mask, motion[t])
                track.masks[int(t)] = encode_mask(m)
                if t == 0:
                    track.boxes[0] = mask_box(o.mask)
                if not m.any():
                    track.boxes.pop(int(t), None)
        else:
            for t in np.flatnonzero(left):
                track.masks[int(t)] = encode_mask(np.zeros((h, w), dtype=bool))
        traj.objects.append(track)
    return traj.validate()


def trajectory_from_tracks(path, size: tuple[int, int] | None = None, padding: float = PADDING,
                           min_size: float = MIN_SIZE, masks: bool = True, **kwargs) -> Trajectory:
    """`load_tracks` then `tracks_to_trajectory`."""
    return tracks_to_trajectory(load_tracks(path, size, **kwargs), padding, min_size, masks)


__all__ = ["MIN_SIZE", "PADDING", "PointTracks", "TrackedObject", "load_tracks", "load_tracks_arrays",
           "load_tracks_json", "points_box", "shift_mask", "trajectory_from_tracks", "tracks_to_trajectory"]
