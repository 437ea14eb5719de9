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

The parts: `magicdata_csv` reads the CSV, `magicdata_clip` reads and checks one clip, `magicdata_maps`
decodes its maps; this module runs the import and writes the dataset and its report.

Clips are decoded in this process or on Ray Data (`engine="ray"`), always written by this process
in the CSV's order, so the finished dataset is the same byte for byte either way. Re-running resumes:
clips already in the index are not decoded again. See docs/dataset-format.md, "Importing MagicData".
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DatasetError
from .magicdata_clip import ASSUMED_FPS, DEFAULT_TEST_FRACTION, import_clip
from .magicdata_csv import (CAPTION_COLUMNS, CSV_NAME, FPS_COLUMNS, ID_COLUMNS,  # noqa: F401  (magicdata's API)
                            MagicDataRow, read_magicdata_csv)
from .magicdata_maps import ClipSkipped, decode_clip_maps  # noqa: F401  (magicdata's API)

IMPORT_JSON = "import.json"
PALETTE = "release"
ENGINES = ("local", "ray")


# ------------------------------------------------------------------------------------- writing


class _ImportWriter:
    """Adds an imported clip to the dataset as DatasetWriter.add does (`DatasetWriter.add_files`:
    temporary files, then, under DATASET/.lock, renamed into place and the index line appended), with
    the video linked or copied instead of re-encoded."""

    def __init__(self, root: Path, copy: bool):
        from .dataset import DatasetWriter

        self.writer = DatasetWriter(root)
        self.root, self.copy = root, copy

    def ids(self) -> set[str]:
        return self.writer.ids()

    def add(self, clip_id: str, video: str, annotation: str, line: str) -> None:
        from .dataset import _fsync_file

        def place(path: Path) -> None:  # the release's video, linked or copied
            if self.copy:
                shutil.copyfile(video, path)
                _fsync_file(path)
            else:
                path.unlink()
                os.symlink(Path(video).resolve(), path)

        self.writer.add_files(clip_id, place, annotation, line.encode("ascii"))


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
