"""Benchmark sets: a MagicBench-style set built from any dataset in our layout, or a DAVIS 2017 folder,
written in the dataset layout (`magicmotion.data.dataset`) so that every part reads them alike.

A benchmark set is a dataset whose records carry `bucket` (the number of controlled objects: "1".."5"
or "6+") and whose trajectories hold only the controlled objects: those visible on frame 0 (the
frame-0 mask is what the generation is conditioned on and what the segmenter is prompted with).
`BENCH/bench.json` records how the set was made and what was skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import BenchError, MagicMotionError
from ..trajectory import Trajectory

BENCH_INFO = "bench.json"
DEFAULT_BUCKETS = (1, 2, 3, 4, 5, "6+")
BENCH_SPLIT = "bench"
DAVIS_FPS = 24.0


# ------------------------------------------------------------------------------------- buckets


def parse_buckets(buckets) -> list[tuple[str, int, int | None]]:
    """(1, 2, "6+") -> [("1", 1, 1), ("2", 2, 2), ("6+", 6, None)]: label, lowest, highest count."""
    out = []
    for b in buckets:
        s = str(b).strip()
        try:
            if s.endswith("+"):
                lo, hi = int(s[:-1]), None
            else:
                lo = hi = int(s)
        except ValueError:
            raise BenchError(f"bad bucket {b!r}: a number of objects (3) or an open end (6+)") from None
        if lo < 1:
            raise BenchError(f"bad bucket {b!r}: counts start at 1")
        out.append((s, lo, hi))
    for (la, lo_a, hi_a), (lb, lo_b, _) in zip(out, out[1:]):
        if hi_a is None or lo_b <= hi_a:
            raise BenchError(f"buckets must be increasing and not overlap: {la} then {lb}")
    return out


def bucket_of(n: int, buckets: list[tuple[str, int, int | None]]) -> str | None:
    for label, lo, hi in buckets:
        if n >= lo and (hi is None or n <= hi):
            return label
    return None


def bucket_sort_key(label: str):
    """Order bucket labels by their count: "1" < "2" < ... < "6+"."""
    s = str(label)
    try:
        return (int(s.rstrip("+")), s.endswith("+"), s)
    except ValueError:
        return (10**9, False, s)


def controlled_objects(traj: Trajectory) -> Trajectory:
    """The trajectory with only the objects that have a non-empty frame-0 mask."""
    out = traj.copy()
    out.objects = [o for o in out.objects if o.mask_area(0) > 0]
    return out


# ---------------------------------------------------------------------------- bench.json


def _write_info(out: Path, info: dict) -> None:
    from ..io import atomic_path

    with atomic_path(out / BENCH_INFO) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")


def read_bench_info(root: str | os.PathLike) -> dict:
    path = Path(root) / BENCH_INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: malformed ({e})") from None


def _check_same_build(out: Path, params: dict) -> None:
    """A bench folder may be resumed only with the parameters it was started with."""
    old = read_bench_info(out).get("params")
    if old is not None and old != params:
        diff = [k for k in sorted(set(old) | set(params)) if old.get(k) != params.get(k)]
        raise BenchError(f"{out}: already holds a benchmark built with other settings "
                         f"({', '.join(f'{k}: {old.get(k)!r} now {params.get(k)!r}' for k in diff)}); "
                         "use another --out")


# ----------------------------------------------------------------------- nothing to build


MAX_NAMED = 20  # skipped clips named in bench.json (and 5 of them in messages)

SKIP_WHY = {"too_short": "shorter than {frames} frames", "no_object_on_frame_0": "no object on frame 0",
            "no_bucket": "a number of objects in no bucket",
            "missing_annotation": "an annotation missing"}


def _is_fresh(out: Path) -> bool:
    """True when `out` does not exist yet or is an empty folder (this build may remove it)."""
    return not out.exists() or (out.is_dir() and not any(out.iterdir()))


def _open_set(out: Path, params: dict, spec):
    """Start or resume the set in `out` (built with `params`; other settings refused):
    (fresh, its DatasetWriter, clips per bucket already written). `fresh`: `out` was absent or empty,
    so a build that fails or takes no clip removes it."""
    from ..data.dataset import DatasetWriter, read_index

    fresh = _is_fresh(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_build(out, params)
    _write_info(out, {"params": params})
    writer = DatasetWriter(out)
    counts = {label: 0 for label, _, _ in spec}
    for r in read_index(out):
        if r.get("bucket") in counts:
            counts[r["bucket"]] += 1
    return fresh, writer, counts


@contextlib.contextmanager
def _removed_on_failure(out: Path, fresh: bool):
    """A clip that fails while the set is written: a set this run started leaves nothing behind."""
    try:
        yield
    except MagicMotionError:
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _close_set(source: Path, out: Path, fresh: bool, summary: dict, skipped: dict, named: dict,
               num_frames) -> dict:
    """Write `summary` to bench.json and return it; when it took no clip, remove `out` if this build
    started it and raise `_nothing_built`."""
    if not summary["clips"]:
        if fresh:
            shutil.rmtree(out)
        raise _nothing_built(source, out, "removed" if fresh else "left as it was", skipped, named,
                             num_frames)
    _write_info(out, summary)
    return summary


def skipped_text(skipped: dict, named: dict, num_frames, max_named: int = 5) -> str:
    """"4 clips shorter than 49 frames (clip-000000: 17 frames, ...)" for each reason with clips.
    skipped: {reason: count}; named: {clip id: {"reason", "detail"}} (a summary's skipped_clips)."""
    parts = []
    for reason, n in skipped.items():
        if not n:
            continue
        why = SKIP_WHY.get(reason, reason).format(frames=num_frames)
        examples = [f"{i}: {v['detail']}" for i, v in named.items() if v["reason"] == reason]
        examples = examples[:max_named]
        more = n - len(examples)
        parts.append(f"{n} clip{'s' if n > 1 else ''} with {why}" if reason != "too_short"
                     else f"{n} clip{'s' if n > 1 else ''} {why}")
        if examples:
            parts[-1] += f" ({', '.join(examples)}{f' and {more} more' if more else ''})"
    return "; ".join(parts)


def _nothing_built(source: Path, out: Path, where: str, skipped: dict, named: dict,
                   num_frames, hint: str = "") -> BenchError:
    """The error of a build that found no clip: `where` says what became of `out`."""
    why = skipped_text(skipped, named, num_frames) or "no clip to take"
    where = f"{out} {where}"
    return BenchError(f"{source}: no clip for the benchmark ({where}): {why}"
                      + (f"; {hint}" if hint else ""))


# ------------------------------------------------------------------------------ MagicBench


def build_bench(dataset_root: str | os.PathLike, out: str | os.PathLike, per_bucket: int = 100,
                num_frames: int = 49, buckets=DEFAULT_BUCKETS, seed: int = 0, split: str | None = None,
                size: tuple[int, int] | None = None, progress: bool = True,
                published: dict[str, int] | None = None) -> dict:
    """A MagicBench-style set: clips of `dataset_root` (in a shuffled order drawn from `seed`) cut to
    their first `num_frames` frames, sorted into buckets by the number of controlled objects, up to
    `per_bucket` clips each (the paper: 6 buckets x 100 = 600 clips of 49 frames).

    Clips shorter than `num_frames` and clips with no object on frame 0 are skipped, counted and
    (the first MAX_NAMED) named. `size` = (W, H) resizes + centre-crops frames and trajectories.
    Re-running with the same settings completes an interrupted build. Returns the summary also
    written to `out/bench.json`. When no clip qualifies this raises BenchError naming the skipped
    clips and why, and leaves no benchmark folder behind (one this build created or found empty is removed).
    `published`: clip id -> the number of objects its source publishes (the released MagicBench's
    buckets): that number picks the bucket, and clips where the decoded frame-0 count differs are
    listed in the summary's `bucket_mismatch`."""
    from tqdm import tqdm

    from ..data.dataset import read_index
    from ..data.reader import Dataset

    dataset_root, out = Path(dataset_root), Path(out)
    if per_bucket < 1:
        raise BenchError(f"per_bucket must be >= 1, got {per_bucket}")
    if num_frames < 1:
        raise BenchError(f"num_frames must be >= 1, got {num_frames}")
    spec = parse_buckets(buckets)
    if dataset_root.resolve() == out.resolve():
        raise BenchError(f"{out}: the benchmark must go to a folder other than the dataset")
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out}: is a file, expected a folder for the benchmark")
    try:
        records = read_index(dataset_root)
    except MagicMotionError as e:
        raise BenchError(str(e)) from None
    if split is not None:
        records = [r for r in records if r["split"] == split]
    if not records:
        raise BenchError(f"{dataset_root}: no clips" + (f" in split {split!r}" if split else "")
                         + "; nothing to build a benchmark from")
    longest = max(r["num_frames"] for r in records)
    if longest < num_frames:  # known from the index alone: say so before writing anything
        named = {r["id"]: {"reason": "too_short", "detail": f"{r['num_frames']} frames"}
                 for r in records[:MAX_NAMED]}
        raise _nothing_built(dataset_root, out, "not written", {"too_short": len(records)}, named,
                             num_frames, f"--frames {longest} or less fits the longest clip")
    reader = Dataset(dataset_root, num_frames=num_frames, sampling="start", size=size)
    for r in records:  # every clip's files first: a broken dataset writes nothing
        if r["num_frames"] >= num_frames:
            reader.check_files(r)
    params = {"kind": "magicbench", "source": str(dataset_root.resolve()), "per_bucket": int(per_bucket),
              "num_frames": int(num_frames), "buckets": [label for label, _, _ in spec], "seed": int(seed),
              "split": split, "size": list(size) if size else None}
    if published is not None:
        params["published_buckets"] = True
    fresh, writer, counts = _open_set(out, params, spec)
    done = writer.ids()
    skipped = {"too_short": 0, "no_object_on_frame_0": 0, "no_bucket": 0}
    named: dict[str, dict] = {}
    mismatch: list[dict] = []

    def skip(record, reason: str, detail: str) -> None:
        skipped[reason] += 1
        if len(named) < MAX_NAMED:
            named[record["id"]] = {"reason": reason, "detail": detail}

    order = np.random.default_rng(seed).permutation(len(records))
    bar = tqdm(order, desc=f"bench build {out.name}", unit="clip", disable=not progress)
    with _removed_on_failure(out, fresh):
        for i in bar:
            if all(c >= per_bucket for c in counts.values()):
                break
            record = records[i]
            if record["id"] in done:
                continue
            if record["num_frames"] < num_frames:
                skip(record, "too_short", f"{record['num_frames']} frames")
                continue
            # the annotation alone says the bucket: the video is decoded only for clips that are kept
            n = sum(o.mask_area(0) > 0 for o in reader.load_annotation(record).objects)
            label = bucket_of(n, spec)
            if published is not None and record["id"] in published and n > 0:
                if published[record["id"]] != n and len(mismatch) < MAX_NAMED:
                    mismatch.append({"id": record["id"], "published": published[record["id"]], "decoded": n})
                label = bucket_of(published[record["id"]], spec)
            if n == 0 or label is None:
                skip(record, "no_object_on_frame_0" if n == 0 else "no_bucket", f"{n} objects")
                continue
            if counts[label] >= per_bucket:
                continue
            clip = reader.load_clip(record)
            traj = controlled_objects(clip.trajectory)
            if size is not None and len(traj.objects) != n:  # the crop to `size` cut an object off
                label = bucket_of(len(traj.objects), spec)
                if not traj.objects or label is None or counts[label] >= per_bucket:
                    continue
            writer.add(record["id"], clip.frames, traj, clip.caption, fps=clip.fps, split=BENCH_SPLIT,
                       bucket=label, source_clip=record["id"])
            counts[label] += 1
    summary = {"params": params, "clips": sum(counts.values()), "buckets": counts, "skipped": skipped,
               "skipped_clips": named,
               "short_buckets": [k for k, c in counts.items() if c < per_bucket]}
    if published is not None:
        summary["bucket_mismatch"] = mismatch
    return _close_set(dataset_root, out, fresh, summary, skipped, named, num_frames)


# ----------------------------------------------------------------------------------- DAVIS


def read_captions(path: str | os.PathLike | None) -> dict[str, str]:
    """Captions by sequence: a JSON object {"seq": "caption"} or text lines "seq<TAB>caption"."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: captions file not found")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchError(f"{path}: malformed JSON ({e})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise BenchError(f"{path}: expected a JSON object {{sequence: caption}}")
        return dict(data)
    out = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise BenchError(f"{path}:{n}: expected 'sequence<TAB>caption'")
        seq, caption = line.split("\t", 1)
        out[seq.strip()] = caption.strip()
    return out


def _read_label_png(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """A DAVIS annotation (palette PNG, value = object id; 255 = void, read as background) at `size`
    (W, H). Returns (int64 (H, W), resized?). An annotation whose size differs from its frame by at
    most 1% in each side (seen in real data, 853 vs 854 wide) is resized with nearest neighbour."""
    from PIL import Image

    from ..io import image_to_labels, opened_image

    try:
        with opened_image(path, BenchError, "annotation") as im:  # palette, grey, 16-bit: the value
            if not (im.mode in ("P", "L", "I", "1") or im.mode.startswith("I;16")):
                raise BenchError(f"{path}: mode {im.mode}: expected a palette PNG (value = object id)")
            labels = image_to_labels(im)
    except BenchError as e:
        raise BenchError(str(e).replace("unreadable annotation", "unreadable PNG")) from None
    resized = labels.shape[::-1] != tuple(size)
    if resized:
        w, h = labels.shape[::-1]
        if any(abs(a - b) > max(1, round(0.01 * b)) for a, b in zip((w, h), size)):
            raise BenchError(f"{path}: annotation is {w}x{h}, its frame {size[0]}x{size[1]}")
        labels = np.array(Image.fromarray(labels.astype(np.int32)).resize(tuple(size), Image.NEAREST)).astype(np.int64)
    labels[labels == 255] = 0
    return labels, resized


def davis_sequences(root: Path, resolution: str, imageset: str | None) -> list[str]:
    images = root / "JPEGImages" / resolution
    if not images.is_dir():
        raise BenchError(f"{root}: not a DAVIS folder (no JPEGImages/{resolution}/)")
    if not (root / "Annotations" / resolution).is_dir():
        raise BenchError(f"{root}: not a DAVIS folder (no Annotations/{resolution}/)")
    if imageset is None:
        return sorted(p.name for p in images.iterdir() if p.is_dir())
    path = Path(imageset)
    if not path.is_file():
        path = root / "ImageSets" / "2017" / f"{imageset}.txt"
    if not path.is_file():
        raise BenchError(f"{root}: image set {imageset!r} not found (a file, or ImageSets/2017/NAME.txt)")
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


def read_davis(root: str | os.PathLike, out: str | os.PathLike, resolution: str = "480p",
               num_frames: int | None = None, captions: str | os.PathLike | None = None,
               imageset: str | None = None, buckets=DEFAULT_BUCKETS, fps: float = DAVIS_FPS,
               progress: bool = True) -> dict:
    """A DAVIS 2017 folder (JPEGImages/RES/SEQ/*.jpg, Annotations/RES/SEQ/*.png) -> a benchmark set.

    Each sequence becomes one clip (its first `num_frames` frames; all when None) whose trajectory is
    the objects annotated on frame 0 (later-appearing objects are not controlled). Captions come from
    `captions` (JSON or TSV) or are the sequence name with dashes as spaces. Sequences shorter than
    `num_frames`, or missing an annotation on one of the frames, are skipped and counted.
    `imageset`: "val", "train", ... (ImageSets/2017/NAME.txt) or a file listing sequences."""
    from tqdm import tqdm

    from ..data.dataset import check_clip_id
    from ..io import read_image
    from ..trajectory import from_label_masks

    root, out = Path(root), Path(out)
    if num_frames is not None and num_frames < 1:
        raise BenchError(f"num_frames must be >= 1, got {num_frames}")
    spec = parse_buckets(buckets)
    names = read_captions(captions)
    sequences = davis_sequences(root, resolution, imageset)
    params = {"kind": "davis", "source": str(root.resolve()), "resolution": resolution,
              "num_frames": num_frames, "imageset": imageset, "buckets": [b for b, _, _ in spec]}
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out}: is a file, expected a folder for the benchmark")
    fresh, writer, counts = _open_set(out, params, spec)
    done = writer.ids()
    skipped = {"too_short": 0, "missing_annotation": 0, "no_object_on_frame_0": 0, "no_bucket": 0}
    resized, reasons, kinds = 0, {}, {}
    with _removed_on_failure(out, fresh):
        # the bar on a terminal only (disable=None): a failure in a log or a pipe stays one line
        for seq in tqdm(sequences, desc=f"davis {out.name}", unit="seq", disable=None if progress else True):
            if seq in done:
                continue
            check_clip_id(seq)
            folder = root / "JPEGImages" / resolution / seq
            if not folder.is_dir():
                raise BenchError(f"{folder}: sequence {seq} has no frames folder")
            jpgs = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not jpgs or (num_frames is not None and len(jpgs) < num_frames):
                skipped["too_short"] += 1
                reasons[seq], kinds[seq] = f"{len(jpgs)} frames", "too_short"
                continue
            jpgs = jpgs[:num_frames] if num_frames else jpgs
            pngs = [root / "Annotations" / resolution / seq / f"{p.stem}.png" for p in jpgs]
            missing = [p for p in pngs if not p.is_file()]
            if missing:
                skipped["missing_annotation"] += 1
                reasons[seq] = f"no annotation {missing[0].name} (and {len(missing) - 1} more)"
                kinds[seq] = "missing_annotation"
                continue
            frames = [read_image(p) for p in jpgs]
            if any(f.shape != frames[0].shape for f in frames):
                raise BenchError(f"{folder}: frames differ in size")
            h, w = frames[0].shape[:2]
            labels = []
            for p in pngs:
                lab, was_resized = _read_label_png(p, (w, h))
                labels.append(lab)
                resized += was_resized
            caption = names.get(seq, seq.replace("-", " ").replace("_", " "))
            traj = controlled_objects(from_label_masks(np.stack(labels), caption=caption, source=str(folder)))
            if not traj.objects:
                skipped["no_object_on_frame_0"] += 1
                continue
            label = bucket_of(len(traj.objects), spec)
            if label is None:
                skipped["no_bucket"] += 1
                continue
            writer.add(seq, np.stack(frames), traj, caption, fps=fps, split=BENCH_SPLIT, bucket=label,
                       source_clip=seq)
            counts[label] += 1
    summary = {"params": params, "clips": sum(counts.values()), "buckets": counts, "skipped": skipped,
               "skipped_sequences": reasons, "resized_annotations": resized}
    named = {seq: {"reason": kinds[seq], "detail": why} for seq, why in reasons.items()}
    return _close_set(root, out, fresh, summary, skipped, named, num_frames or 1)

