"""The released MagicBench (`quanhaol/MagicBench` on the hub, 2026-02) as a benchmark set.

Its layout is read at the user's site. Expected (the paper's MagicData pipeline made it, and the hub
card was not readable from here): MagicData's layout (docs/dataset-format.md, "Importing the released
MagicData"),

    ROOT/
      MagicBench.csv (or MagicData.csv, or the one CSV there)   video id, caption[, number of objects]
      videos/<id>.mp4
      masks/<id>/annotated_frame_00000.png ...                  mask maps (supervision's palette)
      boxs/<id>/annotated_frame_00000.png ...                   box maps

`detect_layout` checks that and, where the folder differs, refuses with what it found.
`import_magicbench` decodes the maps with the MagicData importer (`data.magicdata`, the same decoder
and checks) into a dataset, then builds the benchmark from every clip (`sets.build_bench`), each in
the bucket MagicBench publishes for it (a CSV column with the number of objects) or, without such a
column, the number of objects on frame 0 (1..5, 6+: the paper's six buckets).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import BenchError, MagicMotionError

CSV_NAMES = ("MagicBench.csv", "MagicData.csv")
MAP_FOLDERS = ("videos", "masks", "boxs")
COUNT_COLUMNS = ("num_objects", "object_num", "num_object", "objects", "n_objects", "bucket")
PAPER_FRAMES = 49  # Table 1: 49 frames at 480x720 (CogVideoX)


def _found(root: Path, limit: int = 12) -> str:
    """What a folder holds, for a message: 'a.csv, clips/ (600 entries), ...'."""
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    parts = []
    for p in entries[:limit]:
        if p.is_dir():
            try:
                n = sum(1 for _ in p.iterdir())
            except OSError:
                n = 0
            parts.append(f"{p.name}/ ({n} entries)")
        else:
            parts.append(p.name)
    more = len(entries) - limit
    return (", ".join(parts) + (f" and {more} more" if more > 0 else "")) or "nothing"


def detect_layout(root: str | os.PathLike) -> Path:
    """The CSV of a MagicBench folder in MagicData's layout; BenchError showing what the folder holds
    where it is not in that layout."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"{root}: MagicBench folder not found")
    expected = ("expected MagicData's layout: MagicBench.csv (or MagicData.csv), videos/<id>.mp4, "
                "masks/<id>/*.png, boxs/<id>/*.png")
    csvs = [root / n for n in CSV_NAMES if (root / n).is_file()]
    if not csvs:
        others = sorted(root.glob("*.csv"))
        csvs = others if len(others) == 1 else []
    missing = [f"{d}/" for d in MAP_FOLDERS if not (root / d).is_dir()]
    if not csvs or missing:
        what = []
        if not csvs:
            what.append("no CSV listing the videos")
        if missing:
            what.append(f"no {', '.join(missing)}")
        raise BenchError(f"{root}: not in the layout this reader knows ({'; '.join(what)}); found: "
                         f"{_found(root)}; {expected}")
    return csvs[0]


def published_counts(csv_path: Path, rows) -> tuple[str | None, dict[str, int]]:
    """The CSV column that gives each clip's number of objects (COUNT_COLUMNS, first found) and the
    counts by our clip id ("6+" reads as 6); (None, {}) without such a column."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        lower = {h.strip().lower(): h for h in (reader.fieldnames or [])}
        column = next((lower[c] for c in COUNT_COLUMNS if c in lower), None)
        if column is None:
            return None, {}
        values = [r.get(column) for r in reader]
    counts = {}
    for row, value in zip(rows, values):
        text = (value or "").strip().rstrip("+")
        try:
            counts[row.id] = int(float(text))
        except ValueError:
            raise BenchError(f"{csv_path}:{row.line}: {column!r} is {value!r}, not a number of "
                             "objects") from None
    return column, counts


def import_magicbench(root: str | os.PathLike, out: str | os.PathLike,
                      dataset: str | os.PathLike | None = None, num_frames: int = PAPER_FRAMES,
                      buckets=None, size: tuple[int, int] | None = None, progress: bool = True) -> dict:
    """Import the released MagicBench at `root` into the benchmark folder `out`: its maps decoded
    into the dataset `dataset` (default `<out>-dataset`; resumed if there), then every clip taken,
    cut to its first `num_frames` frames (the paper's 49), in its published bucket. Returns the
    bench summary (also in `out/bench.json`) with `source` = {"root", "csv", "count_column",
    "imported", "skipped_clips"}."""
    from ..data.magicdata import import_magicdata, read_magicdata_csv
    from .sets import DEFAULT_BUCKETS, _write_info, build_bench

    root, out = Path(root), Path(out)
    csv_path = detect_layout(root)
    dataset = Path(dataset) if dataset is not None else out.parent / f"{out.name}-dataset"
    if dataset.resolve() == out.resolve():
        raise BenchError(f"{out}: the imported dataset and the benchmark need two folders")
    try:
        rows = read_magicdata_csv(root, csv_path).rows
        column, counts = published_counts(csv_path, rows)
        # every clip is a benchmark clip: all in one split
        summary = import_magicdata(root, dataset, csv_path=csv_path, test_fraction=1.0, progress=progress)
    except BenchError:
        raise
    except MagicMotionError as e:
        raise BenchError(f"{root}: {e}") from None
    s = build_bench(dataset, out, per_bucket=max(1, len(rows)), num_frames=num_frames,
                    buckets=buckets or DEFAULT_BUCKETS, size=size, progress=progress,
                    published=counts if column else None)
    s["source"] = {"root": str(root), "csv": str(csv_path), "count_column": column,
                   "dataset": str(dataset), "imported": summary.imported,
                   "skipped_clips": summary.skipped[:20]}
    _write_info(out, s)
    return s
