"""Ingest: read the input list (a folder of videos, or a CSV / JSONL of video, caption[, objects]),
find scene cuts (PySceneDetect's ContentDetector on frames decoded with PyAV) and plan clips of a
target length inside each scene; later decode one planned clip.

A folder input takes every video file in it (sorted by name); a video's caption comes from a
`<stem>.txt` beside it, or `<stem>.json` with {"caption": ..., "objects": [...]}. A CSV needs a header
with `video` and `caption` columns (optional `objects`, "a; b" or a JSON list, and `id`); JSONL lines
are objects with the same keys. Relative video paths are relative to the list file's folder.

Captions per scene: a timestamped captions file beside a video, `<stem>.captions.json` (a JSON list
of {"start": s, "end": s, "caption": ...}, times in seconds or "HH:MM:SS.mmm"), gives each planned
clip the caption of the segment that overlaps it most (at least half the clip). A clip with no such
segment, or a video with no captions file, inherits the video's single caption; `SourcePlan.inherited`
lists those clips, so a caption that names objects of another scene can be told apart.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ConfigError, MediaError
from .manifest import ClipRow, SourceRow

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class IngestConfig:
    """clip_frames: frames per clip; frame_step: keep every frame_step-th source frame (the clip's
    fps is the source's / frame_step); scene_threshold: ContentDetector threshold (PySceneDetect's
    default 27); min_scene_frames: shortest scene (source frames); detect_width: frames are shrunk to
    this width for scene detection; max_clips_per_scene: None = as many as fit, back to back."""

    clip_frames: int = 49
    frame_step: int = 1
    scene_threshold: float = 27.0
    min_scene_frames: int = 15
    detect_width: int = 256
    max_clips_per_scene: int | None = None

    def check(self) -> "IngestConfig":
        from ...limits import MAX_FRAMES

        if not 1 <= self.clip_frames <= MAX_FRAMES:
            raise ConfigError(f"clip_frames must be in 1..{MAX_FRAMES}, got {self.clip_frames}")
        if self.frame_step < 1:
            raise ConfigError(f"frame_step must be >= 1, got {self.frame_step}")
        if not self.scene_threshold > 0 or self.scene_threshold == float("inf"):  # NaN fails too
            raise ConfigError(f"scene_threshold must be > 0, got {self.scene_threshold}")
        if self.max_clips_per_scene is not None and self.max_clips_per_scene < 1:
            raise ConfigError(f"max_clips_per_scene must be >= 1, got {self.max_clips_per_scene}")
        return self

    @property
    def span(self) -> int:
        """Source frames one clip covers."""
        return (self.clip_frames - 1) * self.frame_step + 1


# ---------------------------------------------------------------------------------- input lists

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(text: str, taken: set[str]) -> str:
    """A clip-id-safe, unique name from `text` (a file stem): other characters become '_'."""
    base = _SAFE.sub("_", text).strip("._-")[:96] or "video"
    if not base[0].isalnum():
        base = "v" + base
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def parse_objects_field(value, where: str) -> list[str] | None:
    """An `objects` field: a list of strings, a JSON list in a string, or "a; b; c"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: 'objects' is not a JSON list ({e})") from None
        else:
            value = [v for v in (p.strip() for p in re.split(r"[;|]", text)) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: 'objects' must be a list of names, got {value!r}")
    return [v.strip() for v in value if v.strip()]


def read_inputs(path: str | os.PathLike) -> list[SourceRow]:
    """The source videos to curate from a folder, CSV or JSONL file (see the module docstring).
    A malformed list raises ConfigError naming the line; a missing video is left for ingest to
    fail (the run goes on)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise ConfigError(f"{path}: input not found (a folder of videos, a .csv or a .jsonl)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path)
    else:
        raise ConfigError(f"{path}: input must be a folder, a .csv or a .jsonl file")
    taken: set[str] = set()
    out = []
    for where, row in rows:
        video = row.get("video") or row.get("path")
        if not isinstance(video, str) or not video.strip():
            raise ConfigError(f"{where}: no 'video' path")
        caption = row.get("caption", "")
        if caption is None:
            caption = ""
        if not isinstance(caption, str):
            raise ConfigError(f"{where}: 'caption' must be text, got {caption!r}")
        vpath = Path(video.strip())
        vpath = vpath if vpath.is_absolute() else path.parent / vpath
        stem = str(row.get("id") or vpath.stem)
        out.append(SourceRow(id=safe_id(stem, taken), path=str(vpath), caption=caption.strip(),
                             objects=parse_objects_field(row.get("objects"), where)))
    return out


def _read_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        if not ({"video", "path"} & set(fields)):
            raise ConfigError(f"{path}: the CSV needs a header with a 'video' column "
                              f"(and 'caption'; got {reader.fieldnames})")
        rows = []
        for i, raw in enumerate(reader, start=2):
            rows.append((f"{path}:{i}", {k.strip().lower(): v for k, v in raw.items() if k}))
        return rows


def _read_jsonl(path: Path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{i}: malformed JSON line ({e})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{i}: a line must be a JSON object")
            rows.append((f"{path}:{i}", row))
    return rows


def _read_folder(folder: Path) -> list[SourceRow]:
    videos = sorted(p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ConfigError(f"{folder}: no videos ({', '.join(VIDEO_SUFFIXES)}) in folder")
    taken: set[str] = set()
    out = []
    for v in videos:
        caption, objects = "", None
        side_json, side_txt = v.with_suffix(".json"), v.with_suffix(".txt")
        if side_json.is_file():
            try:
                data = json.loads(side_json.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(f"{side_json}: malformed JSON ({e})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{side_json}: must be a JSON object with 'caption'")
            caption = str(data.get("caption", ""))
            objects = parse_objects_field(data.get("objects"), str(side_json))
        elif side_txt.is_file():
            caption = side_txt.read_text(encoding="utf-8")
        out.append(SourceRow(id=safe_id(v.stem, taken), path=str(v), caption=caption.strip(),
                             objects=objects))
    return out


# ------------------------------------------------------------------------------- scene detection


def _open(path: str):
    import av

    if not Path(path).is_file():
        raise MediaError(f"{path}: video not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: unreadable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream")
    return container


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 8.0


def scan_video(path: str, cfg: IngestConfig) -> tuple[int, float, list[int], list[int | None]]:
    """Decode every frame once: (number of frames, fps, scene cut frame indices, pts of every frame).
    A cut at frame k means frame k starts a new scene."""
    import av
    import cv2
    from scenedetect import ContentDetector, FrameTimecode

    detector = ContentDetector(threshold=cfg.scene_threshold, min_scene_len=cfg.min_scene_frames)
    cuts: list[int] = []
    pts: list[int | None] = []
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _fps(stream)
        n = 0
        for frame in container.decode(stream):
            img = frame.to_ndarray(format="bgr24")  # scenedetect works on OpenCV's BGR
            h, w = img.shape[:2]
            if w > cfg.detect_width:
                img = cv2.resize(img, (cfg.detect_width, max(1, round(h * cfg.detect_width / w))),
                                 interpolation=cv2.INTER_AREA)
            cuts += [int(c.frame_num) for c in detector.process_frame(FrameTimecode(n, fps=fps), img)]
            pts.append(frame.pts)
            n += 1
        if n:
            cuts += [int(c.frame_num) for c in detector.post_process(FrameTimecode(n - 1, fps=fps))]
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: unreadable video ({e})") from None
    finally:
        container.close()
    if n == 0:
        raise MediaError(f"{path}: video has no frames")
    return n, fps, sorted({c for c in cuts if 0 < c < n}), pts


def scenes_from_cuts(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """Cut frame indices -> [(start, end)) ranges covering 0..num_frames."""
    edges = [0, *sorted(c for c in cuts if 0 < c < num_frames), num_frames]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


# ----------------------------------------------------------------------------- scene captions

CAPTIONS_SUFFIX = ".captions.json"


@dataclass
class SceneCaption:
    """A caption for the part of a video from `start` to `end` seconds."""

    start: float
    end: float
    caption: str


def _seconds(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parts = [float(p) for p in value.strip().split(":")]
        except ValueError:
            parts = []
        if 1 <= len(parts) <= 3:
            total = 0.0
            for p in parts:
                total = total * 60 + p
            return total
    raise ConfigError(f"{where}: a time must be seconds or HH:MM:SS.mmm, got {value!r}")


def captions_path(video: str | os.PathLike) -> Path:
    """Where a video's timestamped captions are looked for: `<stem>.captions.json` beside it."""
    video = Path(video)
    return video.with_name(video.stem + CAPTIONS_SUFFIX)


def read_scene_captions(video: str | os.PathLike) -> list[SceneCaption] | None:
    """The timestamped captions of a video (see the module docstring), sorted by start; None when it
    has no captions file. A malformed file raises ConfigError naming it and the entry."""
    path = captions_path(video)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: malformed JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("captions", data.get("scenes"))
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of {{\"start\", \"end\", \"caption\"}}")
    out = []
    for i, item in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(item, dict) or not isinstance(item.get("caption"), str):
            raise ConfigError(f"{where}: needs \"start\", \"end\" and a text \"caption\"")
        start, end = _seconds(item.get("start"), where), _seconds(item.get("end"), where)
        if not end > start >= 0:
            raise ConfigError(f"{where}: needs 0 <= start < end, got {start} .. {end}")
        out.append(SceneCaption(start, end, item["caption"].strip()))
    return sorted(out, key=lambda c: (c.start, c.end))


def clip_caption(captions: list[SceneCaption] | None, start: float, end: float,
                 fallback: str) -> tuple[str, bool]:
    """The caption of the clip from `start` to `end` seconds: that of the segment overlapping it most
    when the overlap is at least half the clip, else `fallback` (the video's caption). Returns
    (caption, inherited)."""
    best, overlap = None, 0.0
    for c in captions or []:
        o = min(end, c.end) - max(start, c.start)
        if o > overlap:
            best, overlap = c, o
    if best is not None and overlap >= 0.5 * (end - start):
        return best.caption, False
    return fallback, True


@dataclass
class SourcePlan:
    """The clips planned from one source video, and what decided them: the video's number of frames
    and the length of its longest scene (no clip when that is shorter than IngestConfig.span), and
    the ids of the clips whose caption is the video's own (`inherited`: no per-scene caption)."""

    clips: list[ClipRow]
    num_frames: int
    longest_scene: int
    inherited: list[str] = field(default_factory=list)


def plan_source(source: SourceRow, cfg: IngestConfig) -> SourcePlan:
    """Scene-detect a source video and cut clips of cfg.clip_frames frames (every frame_step-th
    source frame) inside each scene, back to back from the scene's start. Raises MediaError for a
    video that cannot be decoded."""
    captions = read_scene_captions(source.path)
    n, fps, cuts, pts = scan_video(source.path, cfg)
    scenes = scenes_from_cuts(n, cuts)
    clips, inherited = [], []
    for start, end in scenes:
        k = 0
        s = start
        while s + cfg.span <= end:
            if cfg.max_clips_per_scene is not None and k >= cfg.max_clips_per_scene:
                break
            caption, from_video = clip_caption(captions, s / fps, (s + cfg.span) / fps,
                                               source.caption)
            clips.append(ClipRow(
                id=f"{source.id}-f{s:06d}", source=source.id, path=source.path, start_frame=s,
                start_pts=pts[s], num_frames=cfg.clip_frames, frame_step=cfg.frame_step,
                fps=fps / cfg.frame_step, caption=caption, given_objects=source.objects,
                caption_inherited=from_video))
            if from_video:
                inherited.append(clips[-1].id)
            s += cfg.span
            k += 1
    return SourcePlan(clips, n, max(b - a for a, b in scenes), inherited)


def plan_clips(source: SourceRow, cfg: IngestConfig) -> list[ClipRow]:
    """The clips of `plan_source`."""
    return plan_source(source, cfg).clips


# ------------------------------------------------------------------------------------ decoding


def read_clip(clip: ClipRow) -> np.ndarray:
    """Decode a planned clip: uint8 (T, H, W, 3) RGB. Seeks to the key frame before the clip's first
    frame when its timestamp is known, else decodes from the start."""
    import av

    container = _open(clip.path)
    frames = []
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        seek_pts = clip.start_pts
        if seek_pts is not None and clip.start_frame > 0:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        index = None if seek_pts is not None and clip.start_frame > 0 else 0
        last = clip.start_frame + (clip.num_frames - 1) * clip.frame_step
        for frame in container.decode(stream):
            if index is None:  # after a seek: find the clip's first frame by its timestamp
                if frame.pts is None or frame.pts < seek_pts:
                    continue
                index = clip.start_frame
            if index > last:
                break
            if index >= clip.start_frame and (index - clip.start_frame) % clip.frame_step == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            index += 1
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{clip.path}: unreadable video ({e})") from None
    finally:
        container.close()
    if len(frames) != clip.num_frames:
        raise MediaError(f"{clip.path}: clip {clip.id}: decoded {len(frames)} frames from frame "
                         f"{clip.start_frame}, expected {clip.num_frames}")
    return np.stack(frames)
