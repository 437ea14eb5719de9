"""One MagicData clip, read and checked: its video probed, its mask and box maps loaded and decoded
(`magicdata_maps`), its annotation and index line made. `import_clip` is what the local and the Ray
engine of `data.magicdata` run per clip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError, MagicMotionError, MediaError
from .magicdata_maps import ClipSkipped, decode_clip_maps

FRAME_GLOB = "*.png"
DEFAULT_TEST_FRACTION = 0.05
# A video whose container has no timing (a raw stream: ffmpeg's AVFMT_NOTIMESTAMPS) and no rate in the
# CSV is taken at the release's rate (its demo videos: 49 frames at 8 fps), and import.json says so.
ASSUMED_FPS = 8.0
_NO_TIMESTAMPS = 0x0080  # AVFMT_NOTIMESTAMPS (libavformat/avformat.h)


def probe_video(path: str | os.PathLike) -> tuple[int, float, int, int]:
    """(frames, fps, width, height) of a video, counting frames by decoding them; fps 0.0 when the file
    says none (a container without timing, such as a raw stream). ClipSkipped for a missing or
    unreadable video."""
    import av

    path = Path(path)
    if not path.is_file():
        raise ClipSkipped("missing_video", f"video {path} not found")
    n = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipSkipped("unreadable_video", f"video {path}: no video stream")
            stream = container.streams.video[0]
            timed = not container.format.flags & _NO_TIMESTAMPS
            fps = float(stream.average_rate or stream.guessed_rate or 0) if timed else 0.0
            w, h = stream.codec_context.width, stream.codec_context.height
            for frame in container.decode(stream):
                w, h = frame.width, frame.height
                n += 1
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise ClipSkipped("unreadable_video", f"video {path}: unreadable ({e})") from None
    if n == 0:
        raise ClipSkipped("unreadable_video", f"video {path}: no frames")
    return n, fps, int(w), int(h)


def load_map_frames(folder: str | os.PathLike, reason: str) -> np.ndarray:
    """The PNG frames of a map folder (sorted by name) as uint8 (T, H, W, 3). ClipSkipped(`reason`)
    when the folder or its frames are missing or unreadable, or frames differ in size."""
    from ..io import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise ClipSkipped(reason, f"{folder}: folder not found")
    files = sorted(folder.glob(FRAME_GLOB))
    if not files:
        raise ClipSkipped(reason, f"{folder}: no PNG frames")
    frames = []
    for p in files:
        try:
            frames.append(read_image(p))
        except MediaError as e:
            raise ClipSkipped(reason, str(e)) from None
        if frames[-1].shape != frames[0].shape:
            raise ClipSkipped("size", f"{p}: {frames[-1].shape[1]}x{frames[-1].shape[0]}, "
                                      f"{files[0].name} is {frames[0].shape[1]}x{frames[0].shape[0]}")
    return np.stack(frames)


def import_clip(row: dict, test_fraction: float = DEFAULT_TEST_FRACTION) -> dict:
    """Read, decode and check one clip (a MagicDataRow as a dict). Returns {"id", "error", "reason",
    "annotation" (JSON text), "record" (JSON text)}; a bad clip has error and reason set and the rest
    empty. Never raises for bad data: it is what the local and the Ray engine run per clip."""
    out = {"id": row["id"], "error": "", "reason": "", "annotation": "", "record": "", "fps_source": "",
           "occluded": ""}
    try:
        annotation, record, out["fps_source"], occluded = _import_clip(row, test_fraction)
    except ClipSkipped as e:
        out.update(error=str(e), reason=e.reason)
        return out
    except MagicMotionError as e:
        out.update(error=str(e), reason="bad_maps")
        return out
    out.update(annotation=annotation, record=record, occluded=occluded)
    return out


def _import_clip(row: dict, test_fraction: float) -> tuple[str, str, str, str]:
    """(annotation JSON, index line, where fps came from: csv|video|assumed, occluded JSON or "")."""
    from ..trajectory import to_dict
    from .curation.stages import split_of
    from .dataset import ANNOTATIONS, VIDEOS, DatasetWriter, check_record, record_line

    clip = row["id"]
    n, fps, w, h = probe_video(row["video"])
    fps_source = "csv" if row.get("fps") else "video" if fps else "assumed"
    fps = row.get("fps") or fps or ASSUMED_FPS
    masks = load_map_frames(row["masks"], "missing_masks")
    boxes = load_map_frames(row["boxes"], "missing_boxes")
    if not n == len(masks) == len(boxes):
        raise ClipSkipped("frame_count", f"clip {clip}: the video has {n} frames, masks/ "
                                         f"{len(masks)}, boxs/ {len(boxes)}")
    sizes = {"video": (w, h), "masks": masks.shape[2:0:-1], "boxs": boxes.shape[2:0:-1]}
    if len(set(sizes.values())) != 1:
        what = ", ".join(f"{k} {a}x{b}" for k, (a, b) in sizes.items())
        raise ClipSkipped("size", f"clip {clip}: sizes differ ({what})")
    traj, counts = decode_clip_maps(masks, boxes, where=f"clip {clip}")
    traj.caption, traj.source = row["caption"], ""
    try:
        DatasetWriter._check_clip(clip, np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (n, h, w, 3)),
                                  traj)
    except DatasetError as e:
        raise ClipSkipped("bad_maps", str(e)) from None
    record = {"id": clip, "video": f"{VIDEOS}/{clip}.mp4", "annotation": f"{ANNOTATIONS}/{clip}.json",
              "caption": row["caption"], "num_frames": n, "fps": float(fps), "width": w, "height": h,
              "num_objects": len(traj.objects), "split": split_of(row["source_id"], test_fraction),
              "source": "magicdata", "source_id": row["source_id"],
              "boxes_from_masks": counts["boxes_from_masks"]}
    line = record_line(record)
    check_record(json.loads(line), f"clip {clip}")
    occluded = {str(k): v for k, v in counts["occluded"].items()}
    return json.dumps(to_dict(traj)), line.decode("ascii"), fps_source, json.dumps(occluded) if occluded else ""
