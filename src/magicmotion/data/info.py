"""`magicmotion data info`: a dataset's summary (clips, objects, sizes, frame counts, motion) and,
by default, a check of every clip's files and annotation; a plot of the distributions."""

from __future__ import annotations

import os
from pathlib import Path


from ..errors import DatasetError
from .dataset import ANNOTATIONS, OPTIONAL_FIELDS, RECORD_FIELDS, read_index


def dataset_info(root: str | os.PathLike, check_files: bool = True) -> dict:
    """Counts from the index: clips, splits, objects per clip, frames, sizes, fps, extra fields.
    With check_files, a missing video or annotation raises DatasetError naming the clip."""
    root = Path(root)
    records = read_index(root)
    if check_files:
        for r in records:
            for name, default in (("video", None), ("annotation", f"{ANNOTATIONS}/{r['id']}.json")):
                rel = r.get(name, default)
                if not (root / rel).is_file():
                    raise DatasetError(f"{root}: clip {r['id']}: {name} {root / rel} not found")

    def stats(values):
        if not values:
            return {"min": 0, "max": 0, "mean": 0.0, "total": 0}
        return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 3),
                "total": sum(values)}

    def counts(values):
        out: dict[str, int] = {}
        for v in values:
            out[str(v)] = out.get(str(v), 0) + 1
        return out

    objects = [r["num_objects"] for r in records]
    known = set(RECORD_FIELDS) | set(OPTIONAL_FIELDS)
    extra = sorted({k for r in records for k in r if k not in known})
    return {
        "root": str(root),
        "num_clips": len(records),
        "splits": counts(r["split"] for r in records),
        "num_objects": stats(objects),
        "objects_per_clip": dict(sorted(counts(objects).items(), key=lambda kv: int(kv[0]))),
        "num_frames": stats([r["num_frames"] for r in records]),
        "sizes": counts(f"{r['width']}x{r['height']}" for r in records),
        "fps": counts(float(r["fps"]) for r in records),
        "extra_fields": extra,
    }


def write_info_plot(info: dict, png_path: str | os.PathLike) -> Path:
    """A PNG bar chart of the number of clips by objects per clip (from `dataset_info`)."""
    from ..io import pyplot, write_figure

    plt = pyplot()

    per = info["objects_per_clip"]
    keys = [int(k) for k in per] or [1]
    xs = list(range(min(min(keys), 1), max(keys) + 1))
    ys = [per.get(str(x), 0) for x in xs]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.bar(xs, ys, color="#4878cf")
    ax.set_xticks(xs)
    ax.set_ylim(0, max(ys + [1]) * 1.15)
    ax.set_xlabel("objects per clip")
    ax.set_ylabel("clips")
    ax.set_title(f"{Path(info['root']).name}: {info['num_clips']} clips")
    for x, y in zip(xs, ys):
        if y:
            ax.annotate(str(y), (x, y), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return write_figure(fig, png_path)
