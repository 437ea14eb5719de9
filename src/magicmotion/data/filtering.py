"""MagicData filtering: score every clip of a dataset, keep those that pass, report what each filter
removed (docs/data-pipeline.md).

Filters and their scores (all written into each index record under "filters"):

- motion: optical flow (OpenCV DIS) between consecutive frames shrunk to `size` px on the long side.
  `score` = mean flow length in % of the frame's long side per frame (too still below `min`, too
  fast above `max`); `shake` = mean change of the frame's median flow from one frame pair to the next,
  same unit (a shaking camera: above `max_shake`).
- object_motion: how far the objects' box centres get from where they start, in % of the frame
  diagonal; `score` is the largest over objects (at least one object must move `min`).
- object_area: each object's mean mask area on the frames it is visible, in % of the frame; `score`
  (smallest object) must be >= `min`, `largest` <= `max`.
- num_objects: `min` <= objects <= `max`.
- track_quality: the share of frames on which an object's mask is empty (lost); `score` is the worst
  object's, at most `max_lost`.
- duration: seconds (num_frames / fps) in [`min_seconds`, `max_seconds`] and at least `min_frames`.

A threshold set to null is not checked; `enabled: false` turns a filter off. Thresholds come from a
YAML file (configs/filters.yaml) over the defaults below; an unknown filter or key is a ConfigError.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from ..limits import MAX_FRAMES, MAX_SIDE, check_number

FILTERS = ("motion", "object_motion", "object_area", "num_objects", "track_quality", "duration")

DEFAULTS: dict[str, dict] = {
    "motion": {"enabled": True, "min": 0.05, "max": 8.0, "max_shake": 2.0, "size": 128,
               "max_pairs": 16},
    "object_motion": {"enabled": True, "min": 2.0},
    "object_area": {"enabled": True, "min": 0.5, "max": 60.0},
    "num_objects": {"enabled": True, "min": 1, "max": 5},
    "track_quality": {"enabled": True, "max_lost": 0.2},
    "duration": {"enabled": True, "min_frames": 8, "min_seconds": None, "max_seconds": None},
}

MAX_THRESHOLD = 1e9  # |threshold|: finite, and far beyond any score (percentages, counts, seconds)

REPORT_JSON = "filter_report.json"
REPORT_MD = "filter_report.md"
REPORT_PNG = "filter_scores.png"


# ------------------------------------------------------------------------------------- config


def load_filter_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """The filter thresholds: DEFAULTS, then the YAML file at `path`, then `overrides` (same shape).
    Unknown filters or keys and non-numeric thresholds raise ConfigError naming the file."""
    cfg = copy.deepcopy(DEFAULTS)
    sources = []
    if path is not None:
        from ..limits import read_yaml

        path = Path(path)
        data = read_yaml(path, ConfigError, "filter config") or {}
        sources.append((str(path), data))
    if overrides:
        sources.append(("overrides", overrides))
    for where, data in sources:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: must map filter names to settings")
        for name, values in data.items():
            if name not in DEFAULTS:
                raise ConfigError(f"{where}: unknown filter {name!r} (known: {', '.join(FILTERS)})")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: {name}: must be a mapping of settings")
            for key, value in values.items():
                if key not in DEFAULTS[name]:
                    raise ConfigError(f"{where}: {name}: unknown key {key!r} "
                                      f"(known: {', '.join(DEFAULTS[name])})")
                if key == "enabled":
                    if not isinstance(value, bool):
                        raise ConfigError(f"{where}: {name}.enabled must be true or false")
                elif value is not None and (isinstance(value, bool)
                                            or not isinstance(value, (int, float))):
                    raise ConfigError(f"{where}: {name}.{key} must be a number or null, got {value!r}")
                elif value is not None:  # .nan would switch the filter off (every comparison false)
                    check_number(value, f"{name}.{key}", where, -MAX_THRESHOLD, MAX_THRESHOLD, ConfigError)
                cfg[name][key] = value
    for key, hi in (("size", MAX_SIDE), ("max_pairs", MAX_FRAMES)):
        if cfg["motion"][key] is None or not 2 <= cfg["motion"][key] <= hi:
            raise ConfigError(f"motion.{key} must be a number in 2..{hi}, got {cfg['motion'][key]!r}")
    return cfg


# ------------------------------------------------------------------------------------- scores


def motion_scores(frames: np.ndarray, size: int = 128, max_pairs: int = 16) -> dict:
    """Optical flow (DIS, OpenCV) on frames shrunk to `size` px on the long side, over at most
    `max_pairs` consecutive frame pairs spread over the clip. Returns {"score": mean flow length,
    "shake": mean change of the median flow between successive pairs}, in % of the long side."""
    import cv2

    frames = np.asarray(frames)
    t, h, w = frames.shape[:3]
    if t < 2:
        return {"score": 0.0, "shake": 0.0}
    scale = min(1.0, size / max(h, w))
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    starts = np.unique(np.linspace(0, t - 2, min(max_pairs, t - 1)).round().astype(int))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def gray(i):
        return cv2.cvtColor(cv2.resize(frames[i], (sw, sh), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_RGB2GRAY)

    lengths, globals_ = [], []
    for s in starts:
        flow = dis.calc(gray(s), gray(s + 1), None)
        lengths.append(float(np.linalg.norm(flow, axis=-1).mean()))
        globals_.append(np.median(flow.reshape(-1, 2), axis=0))
    unit = 100.0 / max(sw, sh)
    g = np.array(globals_)
    shake = float(np.linalg.norm(np.diff(g, axis=0), axis=1).mean()) if len(g) > 1 else 0.0
    return {"score": float(np.mean(lengths)) * unit, "shake": shake * unit}


def object_scores(traj) -> dict:
    """Object motion, area and track quality of a trajectory (see the module docstring)."""
    diag = float(np.hypot(traj.width, traj.height))
    frame_area = float(traj.width * traj.height)
    moves, areas, lost = [], [], []
    for o in traj.objects:
        frames = sorted(o.boxes)
        if frames:
            c = np.array([[(o.boxes[f][0] + o.boxes[f][2]) / 2, (o.boxes[f][1] + o.boxes[f][3]) / 2]
                          for f in frames])
            moves.append(float(np.linalg.norm(c - c[0], axis=1).max()) / diag * 100.0)
        else:
            moves.append(0.0)
        visible = [o.mask_area(f) for f in range(traj.num_frames) if o.mask_area(f) > 0]
        areas.append(float(np.mean(visible)) / frame_area * 100.0 if visible else 0.0)
        lost.append(1.0 - len(visible) / traj.num_frames)
    return {"object_motion": max(moves, default=0.0), "area_min": min(areas, default=0.0),
            "area_max": max(areas, default=0.0), "lost": max(lost, default=1.0)}


def _outside(value, lo, hi, what: str, fmt: str = "{:.3g}") -> str | None:
    if lo is not None and value < lo:
        return f"{what} {fmt.format(value)} < {lo}"
    if hi is not None and value > hi:
        return f"{what} {fmt.format(value)} > {hi}"
    return None


def evaluate(record: dict, traj, frames: np.ndarray | None, cfg: dict) -> dict:
    """Scores and verdicts of one clip: {filter: {"score": ..., "pass": bool, "reason": str|None}}
    for each enabled filter. `frames` (uint8 (T, H, W, 3)) is only needed for the motion filter."""
    out: dict[str, dict] = {}
    c = cfg
    if c["motion"]["enabled"]:
        m = motion_scores(frames, int(c["motion"]["size"]), int(c["motion"]["max_pairs"]))
        reason = None
        if c["motion"]["min"] is not None and m["score"] < c["motion"]["min"]:
            reason = f"too still: flow {m['score']:.3g} < {c['motion']['min']}"
        elif c["motion"]["max_shake"] is not None and m["shake"] > c["motion"]["max_shake"]:
            reason = f"too shaky: shake {m['shake']:.3g} > {c['motion']['max_shake']}"
        elif c["motion"]["max"] is not None and m["score"] > c["motion"]["max"]:
            reason = f"too fast: flow {m['score']:.3g} > {c['motion']['max']}"
        out["motion"] = {"score": round(m["score"], 4), "shake": round(m["shake"], 4)}
        out["motion"].update({"pass": reason is None, "reason": reason})
    s = object_scores(traj)
    if c["object_motion"]["enabled"]:
        reason = _outside(s["object_motion"], c["object_motion"]["min"], None, "objects move")
        out["object_motion"] = {"score": round(s["object_motion"], 4), "pass": reason is None,
                                "reason": reason and f"objects too still: {reason}"}
    if c["object_area"]["enabled"]:
        reason = _outside(s["area_min"], c["object_area"]["min"], None, "smallest object area %")
        reason = reason or _outside(s["area_max"], None, c["object_area"]["max"],
                                    "largest object area %")
        out["object_area"] = {"score": round(s["area_min"], 4), "largest": round(s["area_max"], 4),
                              "pass": reason is None, "reason": reason}
    if c["num_objects"]["enabled"]:
        n = len(traj.objects)
        reason = _outside(n, c["num_objects"]["min"], c["num_objects"]["max"], "objects", "{}")
        out["num_objects"] = {"score": n, "pass": reason is None, "reason": reason}
    if c["track_quality"]["enabled"]:
        reason = _outside(s["lost"], None, c["track_quality"]["max_lost"], "object lost on a share")
        out["track_quality"] = {"score": round(s["lost"], 4), "pass": reason is None, "reason": reason}
    if c["duration"]["enabled"]:
        seconds = record["num_frames"] / float(record["fps"])
        reason = _outside(record["num_frames"], c["duration"]["min_frames"], None, "frames", "{}")
        reason = reason or _outside(seconds, c["duration"]["min_seconds"],
                                    c["duration"]["max_seconds"], "seconds")
        out["duration"] = {"score": round(seconds, 4), "pass": reason is None, "reason": reason}
    return out


# ------------------------------------------------------------------------------------ running


@dataclass
class FilterReport:
    """What a filter run did: totals, clips removed by each filter (a clip failing several filters
    counts for each; `only` counts clips that filter alone removed), and where things were written."""

    dataset: str
    out: str
    total: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    only: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "out": self.out, "total": self.total, "kept": self.kept,
                "removed": self.removed, "removed_only_by": self.only,
                "unreadable": [{"id": i, "error": e} for i, e in self.unreadable],
                "config": self.config}

    def markdown(self) -> str:
        lines = [f"# Filter report: {Path(self.dataset).name}", "",
                 f"{self.total} clips, {self.kept} kept, {self.total - self.kept} removed.", "",
                 "| filter | removed | removed by it alone | settings |", "|---|---:|---:|---|"]
        for name in FILTERS:
            if name in self.removed:
                settings = ", ".join(f"{k} {v}" for k, v in self.config[name].items() if k != "enabled")
                lines.append(f"| {name} | {self.removed[name]} | {self.only.get(name, 0)} | {settings} |")
        if self.unreadable:
            lines += ["", f"{len(self.unreadable)} clips could not be read and were removed:", ""]
            lines += [f"- {i}: {e}" for i, e in self.unreadable]
        return "\n".join(lines) + "\n"

    def why_removed(self, records: list[dict], max_named: int = 3) -> str:
        """"motion removed 4 of 4 (clip-1: too still: flow 0.01 < 0.05; ...), ..." over the
        filters that removed clips, with the reasons of the first `max_named` clips of each."""
        parts = []
        for name, n in self.removed.items():
            if not n:
                continue
            why = [f"{r['id']}: {r['filters'][name]['reason']}" for r in records
                   if name in r.get("filters", {}) and not r["filters"][name]["pass"]][:max_named]
            parts.append(f"{name} removed {n} of {self.total} ({'; '.join(why)}"
                         + ("; ..." if n > len(why) else "") + ")")
        if self.unreadable:
            i, e = self.unreadable[0]
            parts.append(f"{len(self.unreadable)} unreadable ({i}: {e})")
        return ", ".join(parts) or "no filter passed any clip"

    def format(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.removed.items() if v)
        return (f"{self.out}: kept {self.kept} of {self.total} clips"
                + (f" (removed by {parts})" if parts else "")
                + (f"; {len(self.unreadable)} unreadable, skipped ({self.unreadable[0][1]}"
                   + ("; ..." if len(self.unreadable) > 1 else "") + ")" if self.unreadable else ""))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def score_dataset(root: str | os.PathLike, config: dict, progress: bool = True):
    """Score every clip of the dataset and write the scores into its index (write_index).
    Returns (records with "filters" and "filter_pass", [(id, error) of unreadable clips]).

    Each clip's files are checked first (`Dataset.check_files`: video missing, empty, not a video,
    truncated, its size or frame count not the index's; annotation unreadable or disagreeing): a bad
    clip is named in the unreadable list and skipped. When no clip is valid, DatasetError names the
    first bad one and nothing is written (the index keeps its scores)."""
    from tqdm import tqdm

    from ..errors import MagicMotionError
    from ..io import read_video
    from .dataset import read_index, write_index
    from .reader import Dataset

    root = Path(root)
    records = read_index(root)
    ds = Dataset(root)
    unreadable, bad = [], set()
    for r in records:  # every clip's files first: a dataset with no valid clip stops before any bar
        try:
            ds.check_files(r)
        except MagicMotionError as e:
            unreadable.append((r["id"], str(e)))
            bad.add(r["id"])
    if len(bad) == len(records):
        more = f", and {len(records) - 1} more bad clips" if len(records) > 1 else ""
        raise DatasetError(f"{unreadable[0][1]}{more}: no valid clip to filter")
    for r in tqdm(records, desc="filter", unit="clip", disable=not progress):
        r["filters"], r["filter_pass"] = {}, False
        if r["id"] in bad:
            continue
        try:
            traj = ds.load_annotation(r)
            frames = None
            if config["motion"]["enabled"]:
                frames, _ = read_video(root / r["video"])
            verdicts = evaluate(r, traj, frames, config)
        except MagicMotionError as e:
            unreadable.append((r["id"], str(e)))
            continue
        r["filters"] = verdicts
        r["filter_pass"] = all(v["pass"] for v in verdicts.values())
    write_index(root, records)
    return records, unreadable


def filter_dataset(root: str | os.PathLike, config: dict | str | os.PathLike | None, out: str | os.PathLike,
                   progress: bool = True) -> FilterReport:
    """Score the clips of `root` (scores saved in its index), write the clips that pass every
    enabled filter into a new dataset at `out` (videos and annotations hard-linked, or copied), and
    a report there: filter_report.json, filter_report.md and filter_scores.png.

    An empty dataset raises DatasetError before anything is written. When no clip passes, `out`
    gets the report but no dataset (no index.jsonl), and DatasetError says what removed the clips,
    with an example reason per filter."""
    from ..io import atomic_path
    from .dataset import ANNOTATIONS, VIDEOS, read_index, write_index

    root, out = Path(root), Path(out)
    cfg = config if isinstance(config, dict) else load_filter_config(config)
    if not read_index(root):  # also a clear error for a folder that is not a dataset
        raise DatasetError(f"{root}: no clips to filter ({root / 'index.jsonl'} is empty)")
    if out.resolve() == root.resolve():
        raise DatasetError(f"{out}: the kept subset must go to another folder than the dataset")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: is a file, expected a folder for the kept subset")
    if (out / "index.jsonl").exists():
        raise DatasetError(f"{out}: already a dataset; choose a new --out")
    records, unreadable = score_dataset(root, cfg, progress)

    kept = [r for r in records if r["filter_pass"]]
    out.mkdir(parents=True, exist_ok=True)
    if kept:
        (out / VIDEOS).mkdir(exist_ok=True)
        (out / ANNOTATIONS).mkdir(exist_ok=True)
    for r in kept:
        for key, default in (("video", None), ("annotation", f"{ANNOTATIONS}/{r['id']}.json")):
            rel = r.get(key, default)
            dst = out / rel
            dst.unlink(missing_ok=True)
            _link_or_copy(root / rel, dst)
    if kept:
        write_index(out, kept)

    report = FilterReport(dataset=str(root), out=str(out), total=len(records), kept=len(kept),
                          unreadable=unreadable, config=cfg)
    for name in FILTERS:
        if cfg[name]["enabled"]:
            failing = [r for r in records if name in r["filters"] and not r["filters"][name]["pass"]]
            report.removed[name] = len(failing)
            report.only[name] = sum(
                1 for r in failing if sum(not v["pass"] for v in r["filters"].values()) == 1)
    report.files = {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD),
                    "histograms": str(out / REPORT_PNG)}
    with atomic_path(out / REPORT_JSON) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=1))
    with atomic_path(out / REPORT_MD) as tmp:
        tmp.write_text(report.markdown())
    write_histograms(records, cfg, out / REPORT_PNG)
    if not kept:
        raise DatasetError(f"{root}: no clip passed the filters, so {out} holds only the report "
                           f"({report.files['markdown']}): {report.why_removed(records)}")
    return report


def _thresholds(cfg: dict) -> dict[str, list[float]]:
    """Score name -> threshold lines for the histograms."""
    pick = {"motion": ("min", "max"), "motion shake": ("max_shake",), "object_motion": ("min",),
            "object_area": ("min",), "object_area largest": ("max",), "num_objects": ("min", "max"),
            "track_quality": ("max_lost",), "duration": ("min_seconds", "max_seconds")}
    out = {}
    for name, keys in pick.items():
        f = name.split()[0]
        out[name] = [cfg[f][k] for k in keys if cfg[f].get(k) is not None]
    return out


def write_histograms(records: list[dict], cfg: dict, png_path: str | os.PathLike) -> Path:
    """A PNG with one histogram per score (threshold lines in red, removed share in the title)."""
    from ..io import pyplot, write_figure

    plt = pyplot()

    series: dict[str, list[float]] = {}
    for r in records:
        for name, v in r.get("filters", {}).items():
            series.setdefault(name, []).append(v["score"])
            for extra in ("shake", "largest"):
                if extra in v:
                    series.setdefault(f"{name} {extra}", []).append(v[extra])
    lines = _thresholds(cfg)
    units = {"motion": "flow, % of frame per frame", "motion shake": "shake, % of frame per frame",
             "object_motion": "% of diagonal", "object_area": "smallest object, % of frame",
             "object_area largest": "largest object, % of frame", "num_objects": "objects",
             "track_quality": "share of frames lost", "duration": "seconds"}
    names = list(series) or ["(no scores)"]
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), dpi=90, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        values = series.get(name, [])
        ax.hist(values, bins=min(30, max(5, len(values))), color="#4878cf")
        for t in lines.get(name, []):
            ax.axvline(t, color="#d62728", linestyle="--", linewidth=1)
        failed = sum(1 for r in records if not r.get("filters", {}).get(name.split()[0], {}).get("pass", True))
        ax.set_title(f"{name} ({failed} of {len(records)} removed)" if " " not in name else name,
                     fontsize=9)
        ax.set_xlabel(units.get(name, ""), fontsize=8)
    fig.tight_layout()
    return write_figure(fig, png_path)


# ----------------------------------------------------------------------------------------- cli


def add_filter_parser(sub):
    """`magicmotion data filter DATASET --config filters.yaml --out KEPT`."""
    p = sub.add_parser(
        "filter", help="score clips (motion, objects, tracks, duration) and keep those that pass",
        description="Score every clip of DATASET with the filters (scores saved in its index), "
                    "write the clips that pass into KEPT (videos hard-linked or copied) with a "
                    "report (filter_report.json / .md) and histograms of the scores "
                    "(filter_scores.png).")
    p.add_argument("dataset", type=Path, help="dataset folder")
    p.add_argument("--config", type=Path, default=None,
                   help="filter thresholds (YAML, see configs/filters.yaml; default: built-in)")
    p.add_argument("--out", required=True, type=Path, help="folder for the kept subset (new)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_filter)
    return p


def _filter(args) -> int:
    from ..paths import check_output

    check_output(args.out, [args.dataset, args.config], error=DatasetError, folder=True, make_parents=True)
    report = filter_dataset(args.dataset, load_filter_config(args.config), args.out,
                            progress=not args.quiet)
    print(report.format())
    print(f"report: {report.files['markdown']}  histograms: {report.files['histograms']}")
    return 0
