"""Import the authors' released MagicData into the dataset layout (docs/dataset-format.md).

The release (apache-2.0) is a folder

    ROOT/
      MagicData.csv                          one row per video: its id and its caption
      videos/<id>.mp4
      masks/<id>/annotated_frame_00000.png   mask trajectory maps: filled silhouettes, one PNG a frame
      boxs/<id>/annotated_frame_00000.png    box trajectory maps: outlined boxes, one PNG a frame

and the maps are drawn, not labelled: objects are told apart by colour (supervision's default palette
indexed by object id, at 50% over black: our `release` palette). `import_magicdata` reads every row,
decodes each clip's maps into per-object masks (RLE) and boxes, checks the clip, and writes the video
(a symbolic link, or a copy), the annotation and the index line. A clip that fails a check is skipped,
named with the reason in DATASET/import.json, and the run goes on.

Decoding (`decode_clip_maps`), as the release draws: supervision's `MaskAnnotator` (default palette
by object id, opacity 0.5 over black, larger masks painted first, smaller on top) for masks/, and
`cv2.rectangle` of each mask's `cv2.boundingRect` (thickness min(H, W) // 100, in id order) for boxs/:

1. colours: PNG maps are lossless, so every colour on a few pixels is an object, whatever colours it
   lies between; lossy maps take `trajectory.decode`'s lossy path (cores, blends told apart by size,
   shape and colour statistics, close colours voted on by neighbours). Ids come from palette order
   (colour k of supervision's palette is object k, 1..21);
2. masks: the pixels of an object's colour on each frame of masks/ (what shows of it);
3. boxes: on each frame of boxs/, the object's outline is fitted by inverting `cv2.rectangle`
   (`outlines.fit_box`), later outlines (higher ids) hiding parts of it; a filled shape gives its
   tight box; a frame with a mask but no visible outline takes the mask's tight box. A box must hold
   its mask: one that falls short where its outline is hidden is grown to it, one the visible
   outline contradicts skips the clip (`box_mask`);
4. occluded: frames where an object is there (its outline shows, or it shows before and after under
   other objects) but no pixel of it does on masks/: an empty mask, listed in import.json.

What the maps cannot say: pixels of an object under a smaller one (they are the smaller one's);
objects whose ids are 21 apart share a colour and read back as one object (the smaller id).

Clips are decoded in this process or on Ray Data (`engine="ray"`), always written by this process
in the CSV's order, so the finished dataset is the same byte for byte either way. Re-running resumes:
clips already in the index are not decoded again. See docs/dataset-format.md, "Importing MagicData".
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError, MagicMotionError, MediaError
from .magicdata_maps import ClipSkipped, decode_clip_maps

CSV_NAME = "MagicData.csv"
IMPORT_JSON = "import.json"
PALETTE = "release"
FRAME_GLOB = "*.png"
DEFAULT_TEST_FRACTION = 0.05
ENGINES = ("local", "ray")

# The release's CSV header is not documented where we could read it: these names are accepted, in
# this order of preference (case-insensitive); any other header is refused with the columns it has.
ID_COLUMNS = ("video_id", "videoid", "video", "id", "path", "video_path", "file_name", "name")
CAPTION_COLUMNS = ("caption", "text", "prompt", "description")
# A frame-rate column, where the CSV has one, is the dataset's own metadata and wins over the video's.
FPS_COLUMNS = ("fps", "frame_rate", "framerate")
# A video whose container has no timing (a raw stream: ffmpeg's AVFMT_NOTIMESTAMPS) and no rate in the
# CSV is taken at the release's rate (its demo videos: 49 frames at 8 fps), and import.json says so.
ASSUMED_FPS = 8.0
_NO_TIMESTAMPS = 0x0080  # AVFMT_NOTIMESTAMPS (libavformat/avformat.h)


# ------------------------------------------------------------------------------------------ CSV


@dataclass
class MagicDataRow:
    """One row of MagicData.csv: `id` is the clip id in our dataset (the release's id made a safe file
    name), `source_id` the release's id, `video` / `masks` / `boxes` the paths in the release."""

    id: str
    source_id: str
    video: str
    masks: str
    boxes: str
    caption: str
    line: int = 0
    fps: float | None = None  # from the CSV's frame-rate column, where it has one


@dataclass
class MagicDataCSV:
    rows: list[MagicDataRow]
    id_column: str
    caption_column: str
    header: list[str] = field(default_factory=list)


def _pick(header: list[str], candidates, given: str | None, what: str, path: Path) -> str:
    lower = {h.strip().lower(): h for h in header}
    if given is not None:
        if given.strip().lower() not in lower:
            raise ConfigError(f"{path}: no column {given!r} for the {what} (columns: {', '.join(header)})")
        return lower[given.strip().lower()]
    for name in candidates:
        if name in lower:
            return lower[name]
    raise ConfigError(
        f"{path}: unknown header: no {what} column (looked for {', '.join(candidates)}; the file "
        f"has {', '.join(repr(h) for h in header) or 'no header'}); name it with "
        f"--{'id' if what == 'video id' else 'caption'}-column")


def read_magicdata_csv(root: str | os.PathLike, csv_path: str | os.PathLike | None = None,
                       id_column: str | None = None, caption_column: str | None = None
                       ) -> MagicDataCSV:
    """The rows of ROOT/MagicData.csv (or `csv_path`). The video id column is the first of ID_COLUMNS
    in the header (or `id_column`), the caption column the first of CAPTION_COLUMNS (or
    `caption_column`); a header with neither raises ConfigError listing its columns. A value may be an
    id (`abc`), a file name (`abc.mp4`) or a path (`videos/abc.mp4`): the id is the file's stem."""
    from ..paths import contained
    from .curation.ingest import safe_id

    root = Path(root)
    path = Path(csv_path) if csv_path else root / CSV_NAME
    if not root.is_dir():
        raise DatasetError(f"{root}: MagicData folder not found")
    if not path.is_file():
        raise DatasetError(f"{path}: not found (MagicData lists its videos and captions there)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            id_col = _pick(header, ID_COLUMNS, id_column, "video id", path)
            cap_col = _pick(header, CAPTION_COLUMNS, caption_column, "caption", path)
            if id_col == cap_col:
                raise ConfigError(f"{path}: the video id and the caption cannot both be column {id_col!r}")
            fps_col = next((h for h in header if h.strip().lower() in FPS_COLUMNS), None)
            raw = [(i, r) for i, r in enumerate(reader, start=2)]
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DatasetError(f"{path}: malformed CSV ({e})") from None
    taken: set[str] = set()
    rows = []
    for line, r in raw:
        value = (r.get(id_col) or "").strip()
        if not value:
            raise DatasetError(f"{path}:{line}: empty {id_col!r}")
        where = f"{path}:{line}"
        given = contained(root, value, where, "video id", DatasetError, links_out=True)  # never ../
        name = Path(value).name
        source_id = name[:-4] if name.lower().endswith(".mp4") else name
        if not source_id or source_id.startswith("."):
            raise DatasetError(f"{where}: video id {value!r} names no video")
        video = given if given.is_file() else root / "videos" / f"{source_id}.mp4"
        rows.append(MagicDataRow(
            id=safe_id(source_id, taken), source_id=source_id, video=str(video),
            masks=str(root / "masks" / source_id), boxes=str(root / "boxs" / source_id),
            caption=(r.get(cap_col) or "").strip(), line=line, fps=_csv_fps(r.get(fps_col) if fps_col else None)))
    return MagicDataCSV(rows, id_col, cap_col, header)


def _csv_fps(value) -> float | None:
    """A CSV frame-rate cell as a positive number, None when empty or not one."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return None
    return fps if 0 < fps < 1000 else None


# -------------------------------------------------------------------------------------- reading


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


# ------------------------------------------------------------------------------------ one clip


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


# ------------------------------------------------------------------------------------- writing


class _ImportWriter:
    """Adds an imported clip to the dataset the way DatasetWriter.add does (temporary files, then,
    under DATASET/.lock, renamed into place and the index line appended), with the video linked or
    copied instead of re-encoded."""

    def __init__(self, root: Path, copy: bool):
        from .dataset import DatasetWriter

        self.writer = DatasetWriter(root)
        self.root, self.copy = root, copy

    def ids(self) -> set[str]:
        return self.writer.ids()

    def add(self, clip_id: str, video: str, annotation: str, line: str) -> None:
        from ..io import fsync_dir
        from .dataset import ANNOTATIONS, VIDEOS, _DatasetLock, _fsync_file

        w = self.writer
        video_tmp = w._temp(VIDEOS, clip_id, ".mp4")
        ann_tmp = w._temp(ANNOTATIONS, clip_id, ".json")
        try:
            if self.copy:
                shutil.copyfile(video, video_tmp)
                _fsync_file(video_tmp)
            else:
                video_tmp.unlink()
                os.symlink(Path(video).resolve(), video_tmp)
            with open(ann_tmp, "w") as f:
                f.write(annotation)
                f.flush()
                os.fsync(f.fileno())
            with w._thread_lock, _DatasetLock(self.root):
                w._refresh()
                if clip_id in w._ids:
                    raise DatasetError(f"{self.root}: clip {clip_id} is already in the dataset")
                os.replace(video_tmp, self.root / VIDEOS / f"{clip_id}.mp4")
                os.replace(ann_tmp, self.root / ANNOTATIONS / f"{clip_id}.json")
                fsync_dir(self.root / VIDEOS)
                fsync_dir(self.root / ANNOTATIONS)
                w._append(line.encode("ascii"))
                w._ids.add(clip_id)
        finally:
            if video_tmp.is_symlink() or video_tmp.exists():
                video_tmp.unlink()
            ann_tmp.unlink(missing_ok=True)


@dataclass
class ImportSummary:
    """What an import run did (`done` now, `already` there before) and the dataset's state for this
    CSV (`imported` in all, `skipped` with reasons), as written to DATASET/import.json."""

    dataset: str
    rows: int = 0
    done: int = 0
    already: int = 0
    imported: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def by_reason(self) -> dict:
        out: dict[str, int] = {}
        for s in self.skipped:
            out[s["reason"]] = out.get(s["reason"], 0) + 1
        return dict(sorted(out.items()))

    def format(self, max_named: int = 10) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.dataset}: {self.imported} of {self.rows} clips imported ({self.done} now, "
                 f"{rate:.2f} clips/s; {self.already} already there), {len(self.skipped)} skipped"
                 + (f" ({', '.join(f'{k}: {v}' for k, v in self.by_reason().items())})"
                    if self.skipped else "")]
        for s in self.skipped[:max_named]:
            lines.append(f"  skipped {s['id']} [{s['reason']}]: {s['detail']}")
        if len(self.skipped) > max_named:
            lines.append(f"  ... and {len(self.skipped) - max_named} more (see "
                         f"{Path(self.dataset) / IMPORT_JSON})")
        return "\n".join(lines)


def _previous_occluded(path: Path) -> dict:
    """The occluded frames an earlier run recorded in import.json (kept for the clips it imported)."""
    try:
        found = json.loads(path.read_text()).get("occluded", {}) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        return {}
    return found if isinstance(found, dict) else {}


def _decode_local(rows: list[dict], test_fraction: float):
    for row in rows:
        yield import_clip(row, test_fraction)


class _DecodeStage:
    """Ray task: one clip's `import_clip`."""

    def __init__(self, test_fraction: float):
        self.test_fraction = test_fraction

    def __call__(self, row: dict) -> dict:
        return import_clip(dict(row), self.test_fraction)


def require_ray() -> None:
    """ConfigError unless Ray Data imports: checked before anything is written (import and curate)."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'ray[data]'") from None


def _decode_ray(rows: list[dict], test_fraction: float, ray_address: str | None, workers: int | None):
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                 **({"num_cpus": workers} if workers and not ray_address else {}))
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # results in CSV order: the same dataset as local
    ctx.enable_progress_bars = False
    # small blocks: a clip takes seconds, so results (and the progress bar) come a few clips at a time
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 5000)))
    ds = ds.map(_DecodeStage(test_fraction), **({"concurrency": workers} if workers else {}))
    for out in ds.iter_rows():
        yield dict(out)


def import_magicdata(root: str | os.PathLike, out: str | os.PathLike, engine: str = "local",
                     limit: int | None = None, copy: bool = False,
                     test_fraction: float = DEFAULT_TEST_FRACTION, csv_path=None,
                     id_column: str | None = None, caption_column: str | None = None,
                     ray_address: str | None = None, workers: int | None = None,
                     progress: bool = True) -> ImportSummary:
    """Import the MagicData release at `root` into the dataset at `out` (created, or resumed: clips
    already in its index are kept). `limit`: only the first N rows of the CSV. `copy`: copy the videos
    (default: symbolic links to them). `test_fraction`: the share of videos in the `test` split, fixed
    per video by a hash of its id. Writes DATASET/import.json and returns the summary. An unknown CSV
    header raises ConfigError before anything is written; a bad clip is skipped and named."""
    import time

    from tqdm import tqdm

    from ..io import atomic_path

    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "ray":
        require_ray()
    if not 0.0 <= test_fraction <= 1.0:
        raise ConfigError(f"test fraction must be in [0, 1], got {test_fraction}")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {limit}")
    if workers is not None and not 1 <= workers <= 4096:
        raise ConfigError(f"--workers must be in 1..4096, got {workers}")
    root, out = Path(root), Path(out)
    table = read_magicdata_csv(root, csv_path, id_column, caption_column)
    rows = table.rows[:limit] if limit is not None else table.rows
    if out.resolve() == root.resolve():
        raise ConfigError(f"{out}: write the dataset outside the MagicData folder {root}")
    previous = out / IMPORT_JSON
    if previous.is_file():
        try:
            before = json.loads(previous.read_text()).get("test_fraction")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            before = None
        if before is not None and before != test_fraction:
            raise ConfigError(f"{out}: imported with --test-fraction {before}; resuming with "
                              f"{test_fraction} would move videos between the splits (use {before}, "
                              "or another --out)")
    fresh = not out.exists()
    assumed = set(_previous_report(previous).get("fps_assumed", {}).get("clips", []))  # a resumed import's
    writer = _ImportWriter(out, copy)
    summary = ImportSummary(dataset=str(out), rows=len(rows))
    have = writer.ids()
    skipped: dict[str, dict] = {}
    occluded = _previous_occluded(previous)
    seen: set[str] = set()
    todo = []
    for r in rows:
        if r.source_id in seen:
            skipped[r.id] = {"id": r.id, "reason": "duplicate_id",
                             "detail": f"CSV line {r.line}: video {r.source_id} is listed again"}
            continue
        seen.add(r.source_id)
        if r.id in have:
            summary.already += 1
        else:
            todo.append(r.__dict__.copy())
    start = time.perf_counter()
    if todo:
        results = (_decode_ray(todo, test_fraction, ray_address, workers) if engine == "ray"
                   else _decode_local(todo, test_fraction))
        videos = {r["id"]: r["video"] for r in todo}
        with tqdm(total=len(todo), desc="import", unit="clip", disable=not progress) as bar:
            for res in results:
                if res["error"]:
                    skipped[res["id"]] = {"id": res["id"], "reason": res["reason"],
                                          "detail": res["error"]}
                else:
                    writer.add(res["id"], videos[res["id"]], res["annotation"], res["record"])
                    summary.done += 1
                    if res.get("fps_source") == "assumed":
                        assumed.add(res["id"])
                    if res.get("occluded"):
                        occluded[res["id"]] = json.loads(res["occluded"])
                bar.update(1)
    summary.seconds = time.perf_counter() - start
    index_ids = writer.ids()
    summary.imported = sum(1 for r in rows if r.id in index_ids and r.id not in skipped)
    order = {r.id: i for i, r in enumerate(rows)}
    summary.skipped = sorted(skipped.values(), key=lambda s: order.get(s["id"], len(order)))
    if not index_ids:  # an empty dataset is not a result: say why, and leave no new folder
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        first = summary.skipped[0] if summary.skipped else None
        why = (f"{len(summary.skipped)} skipped ({first['id']} [{first['reason']}]: {first['detail']}"
               + ("; ..." if len(summary.skipped) > 1 else "") + ")") if first else "the CSV lists no video"
        raise DatasetError(f"{Path(csv_path) if csv_path else root / CSV_NAME}: no clip imported "
                           f"({out} {'removed' if fresh else 'left as it was'}): {why}")
    report = {
        "source": str(root), "csv": str(Path(csv_path) if csv_path else root / CSV_NAME),
        "columns": {"id": table.id_column, "caption": table.caption_column},
        "palette": PALETTE, "videos": "copied" if copy else "linked", "test_fraction": test_fraction,
        "rows": summary.rows, "imported": summary.imported, "skipped": len(summary.skipped),
        "skipped_by_reason": summary.by_reason(), "skipped_clips": summary.skipped,
        "fps_column": next((h for h in table.header if h.strip().lower() in FPS_COLUMNS), None),
        "fps_assumed": {"fps": ASSUMED_FPS, "clips": sorted(assumed & index_ids)},
        # per clip, object and frame: there, but entirely covered on the mask maps (an empty mask)
        "occluded": {r.id: occluded[r.id] for r in rows if r.id in occluded and r.id in index_ids},
    }
    with atomic_path(out / IMPORT_JSON) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    return summary


def _previous_report(path: Path) -> dict:
    """A resumed import's import.json ({} when there is none or it is unreadable)."""
    try:
        report = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return report if isinstance(report, dict) else {}


__all__ = ["CAPTION_COLUMNS", "ClipSkipped", "ID_COLUMNS", "ImportSummary", "MagicDataRow", "decode_clip_maps",
           "import_clip", "import_magicdata", "read_magicdata_csv"]
