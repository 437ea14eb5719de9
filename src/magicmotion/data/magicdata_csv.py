"""MagicData.csv, the release's list of videos: one row per video, its id and its caption (and, where
the CSV has one, its frame rate). Part of the MagicData import (`data.magicdata`).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DatasetError

CSV_NAME = "MagicData.csv"

# The release's CSV header is not documented where we could read it: these names are accepted, in
# this order of preference (case-insensitive); any other header is refused with the columns it has.
ID_COLUMNS = ("video_id", "videoid", "video", "id", "path", "video_path", "file_name", "name")
CAPTION_COLUMNS = ("caption", "text", "prompt", "description")
# A frame-rate column, where the CSV has one, is the dataset's own metadata and wins over the video's.
FPS_COLUMNS = ("fps", "frame_rate", "framerate")


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
