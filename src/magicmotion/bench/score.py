"""Scoring a benchmark run: Mask IoU and Box IoU per clip (segmenting the controlled objects in each
generated video), frame-0 PSNR, late-frame background PSNR and object colour error (against the
clip's own frames and reference masks), FID and FVD (generated vs. ground-truth clips), by bucket
and overall, written to RUN/scores.json. How each number is computed and averaged: `metrics.py` and docs/benchmark.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import BenchError, MagicMotionError
from .metrics import I3D_HELP, FIDMeter, I3DFeatures, appearance_scores, clip_scores, frechet_features
from .runner import VIDEOS, bench_records, read_run
from .segmenters import Segmenter, make_segmenter
from .sets import bucket_sort_key

SCORES = "scores.json"
SCORES_VERSION = 1
# per clip and in every summary; absent from scores written before they were added (read as None)
APPEARANCE = ("frame0_psnr", "background_psnr", "colour_error")


def score_run(run_dir: str | os.PathLike, segmenter: str | Segmenter = "classic", sam2=None,
              inception=None, i3d=None, device: str = "cpu", fvd_frames: int = 16, fid_stride: int = 1,
              progress: bool = True) -> dict:
    """Score every clip of the run at `run_dir` and write `run_dir/scores.json`.

    segmenter: "classic", "sam2" (weights from `sam2`: a folder or hub id) or a Segmenter;
    inception: None / weights path / nn.Module for FID (see `FIDMeter`); i3d: the I3D TorchScript file
    for FVD (None: FVD is not computed). Without the weights FID / FVD are null and `notes` says what
    is needed; the IoU metrics are computed regardless. fvd_frames: frames per clip for FVD (the first
    ones); fid_stride: every n-th frame for FID. Returns the scores."""
    from tqdm import tqdm

    from ..data.reader import Dataset
    from ..io import read_video
    from ..trajectory import rescale, resize_crop

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    bench = Path(run["bench"])
    if fvd_frames < 1 or fid_stride < 1:
        raise BenchError(f"fvd_frames and fid_stride must be >= 1, got {fvd_frames} and {fid_stride}")
    by_id = {r["id"]: r for r in bench_records(bench)}
    missing = [c for c in run["clips"] if c not in by_id]
    if missing:
        raise BenchError(f"{run_dir}: clip {missing[0]} of the run is not in the benchmark {bench}")
    no_video = [c for c in run["clips"] if not (run_dir / VIDEOS / f"{c}.mp4").is_file()]
    if no_video:
        raise BenchError(f"{run_dir}: clip {no_video[0]} has no video {run_dir / VIDEOS / (no_video[0] + '.mp4')} "
                         f"({len(no_video)} missing); finish the run with `magicmotion bench run` first")
    seg = segmenter if isinstance(segmenter, Segmenter) else make_segmenter(segmenter, sam2=sam2, device=device)

    notes = []
    fid = None
    try:
        fid = FIDMeter(inception, device=device)
    except BenchError as e:
        notes.append(f"FID not computed: {e}")
    i3d_features = None
    if i3d is None:
        notes.append("FVD not computed: no --i3d given. " + I3D_HELP)
    else:
        try:
            i3d_features = I3DFeatures(i3d, device=device, num_frames=fvd_frames)
        except BenchError as e:
            notes.append(f"FVD not computed: {e}")
    fvd_fake, fvd_real = {}, {}

    reader = Dataset(bench, num_frames=None, sampling="start")
    clips = []
    for cid in tqdm(run["clips"], desc=f"bench score {run_dir.name}", unit="clip", disable=not progress):
        record = by_id[cid]
        try:
            clip = reader.load_clip(record)
        except MagicMotionError as e:
            raise BenchError(str(e)) from None
        path = run_dir / VIDEOS / f"{cid}.mp4"
        video, _ = read_video(path)
        T, H, W = video.shape[:3]
        if T != len(clip.frames):
            raise BenchError(f"clip {cid}: {path} has {T} frames, the benchmark clip has "
                             f"{len(clip.frames)}")
        ref = rescale(clip.trajectory, (W, H))
        ref.source = f"{bench}: clip {cid}"
        real = resize_crop(clip.frames, (W, H)) if clip.frames.shape[1:3] != (H, W) else clip.frames
        pred = seg.track(video, {o.id: o.mask(0) for o in ref.objects})
        s = clip_scores(pred, ref)
        bucket = str(record.get("bucket", len(ref.objects)))
        clips.append({"id": cid, "bucket": bucket, "num_objects": len(ref.objects),
                      "mask_iou": s["mask_iou"], "box_iou": s["box_iou"], **appearance_scores(video, real, ref),
                      "objects": {str(k): v for k, v in s["objects"].items()}})
        if fid is not None:
            fid.update(video[::fid_stride], real=False, group=bucket)
            fid.update(real[::fid_stride], real=True, group=bucket)
        if i3d_features is not None:
            fvd_fake[cid] = i3d_features([video])
            fvd_real[cid] = i3d_features([real])

    def summary(subset, groups):
        ids = [c["id"] for c in subset]
        return {"clips": len(subset),
                "mask_iou": _mean([c["mask_iou"] for c in subset]),
                "box_iou": _mean([c["box_iou"] for c in subset]),
                **{k: _mean([c.get(k) for c in subset]) for k in APPEARANCE},
                "fid": fid.compute(groups) if fid is not None else None,
                "fvd": _fvd(ids, fvd_fake, fvd_real) if i3d_features is not None else None}

    buckets = sorted({c["bucket"] for c in clips}, key=bucket_sort_key)
    scores = {
        "version": SCORES_VERSION,
        "run": {"dir": str(run_dir.resolve()), "label": run.get("label") or run_dir.name,
                "bench": str(bench), "settings": run["settings"]},
        "segmenter": {"name": seg.name, "weights": str(sam2) if seg.name == "sam2" and sam2 else None},
        "protocol": {"skip_first_frame": True, "empty_vs_empty": 1.0, "fid_stride": fid_stride,
                     "fvd_frames": fvd_frames, "inception": _weights_name(inception),
                     "i3d": str(i3d) if i3d is not None else None},
        "overall": summary(clips, None),
        "buckets": {b: summary([c for c in clips if c["bucket"] == b], [b]) for b in buckets},
        "notes": notes,
        "clips": clips,
    }
    from ..io import atomic_path

    with atomic_path(run_dir / SCORES) as tmp:
        tmp.write_text(json.dumps(scores, indent=1) + "\n")
    return scores


def read_scores(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / SCORES
    if not path.is_file():
        raise BenchError(f"{run_dir}: no {SCORES}; score the run first with "
                         f"`magicmotion bench score {run_dir}`")
    from ..limits import read_json

    return check_scores(read_json(path, BenchError, "scores file"), path)


def check_scores(scores, path) -> dict:
    """The parts of a scores.json a report reads, with their types: BenchError naming the file and
    the field (a hand-edited or foreign file is refused, not a traceback halfway through a report)."""
    import math

    def bad(what: str, value):
        text = repr(value)
        raise BenchError(f"{path}: {what} is {text[:60] + '...' if len(text) > 60 else text}; not a scores file "
                         "written by `magicmotion bench score`")

    if not isinstance(scores, dict):
        bad("the file", scores)
    run, segmenter = scores.get("run"), scores.get("segmenter")
    if not isinstance(run, dict) or not isinstance(segmenter, dict):
        bad("'run' / 'segmenter'", (run, segmenter))
    for key in ("label", "bench"):
        if not isinstance(run.get(key), str):
            bad(f"run.{key}", run.get(key))
    if not isinstance(segmenter.get("name"), str):
        bad("segmenter.name", segmenter.get("name"))
    if not isinstance(scores.get("notes", []), list) or not all(isinstance(n, str) for n in scores.get("notes", [])):
        bad("notes", scores.get("notes"))
    buckets = scores.get("buckets")
    if not isinstance(buckets, dict):
        bad("buckets", buckets)
    for where, row in [("overall", scores.get("overall")), *((f"buckets.{k}", v) for k, v in buckets.items())]:
        if not isinstance(row, dict):
            bad(where, row)
        clips = row.get("clips", 0)
        if isinstance(clips, bool) or not isinstance(clips, int) or clips < 0:
            bad(f"{where}.clips", clips)
        for key in ("fid", "fvd", "mask_iou", "box_iou", *APPEARANCE):
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                bad(f"{where}.{key}", value)
    return scores


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _fvd(ids, fake: dict, real: dict) -> float | None:
    ids = [i for i in ids if i in fake and i in real]
    if len(ids) < 2:
        return None
    return frechet_features(np.concatenate([fake[i] for i in ids]), np.concatenate([real[i] for i in ids]))


def _weights_name(value) -> str | None:
    if value is None:
        return "torchmetrics default"
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return type(value).__name__

