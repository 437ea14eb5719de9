"""Runners: plan clips from the sources, then take every clip not yet done through the stages, and
record each step in the manifest.

Order of events for one clip (what makes a kill at any moment safe):
1. manifest: stage X, running           (for each stage)
2. DatasetWriter.add: video + annotation written to temporary files and renamed, then the index line
   appended (fsync'd)
3. manifest: done
A kill before 2 completes leaves no index line: the clip is redone on resume. A kill between 2 and 3
leaves the clip in the index but not done: on resume `Manifest.reconcile` marks it done from the index
and it is not written again. So at most the clips in flight are redone, and none is duplicated.

`local` runs the stages in this process, batching the language model and Grounding DINO over
`batch_size` clips and tracking one clip at a time. `ray` runs the same stage functions on Ray Data:
scene detection and decoding as tasks, the three models as actor pools (`actors` actors with
`gpus_per_actor` GPUs each, built once per actor from picklable factories); the
driver writes the clips and the manifest, so the index and the manifest have a single writer.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError, DatasetError
from .manifest import Manifest
from .stages import (CurationConfig, CurationModels, grounding_stage, load_stage, new_task,
                     objects_stage, tracking_stage, write_stage)

MANIFEST = "manifest.sqlite"


@dataclass
class CurationSummary:
    """What a run did. done / failed: clips finished or failed in this run; skipped: clips already
    done before it; sources_failed: source videos that could not be read (never planned);
    reconciled: clips found written but not marked done (a killed run), now marked done;
    failures: (id, stage, reason) of every failed source ("ingest") and clip in the manifest;
    too_short: (path, frames, longest scene) of every source that gave no clip, and clip_span the
    source frames one clip needs (--clip-frames and --frame-step)."""

    dataset: str
    done: int = 0
    failed: int = 0
    skipped: int = 0
    sources_failed: int = 0
    reconciled: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    too_short: list[tuple[str, int | None, int | None]] = field(default_factory=list)
    clip_frames: int = 49
    frame_step: int = 1

    @property
    def clip_span(self) -> int:
        return (self.clip_frames - 1) * self.frame_step + 1

    def too_short_text(self, max_named: int = 5) -> str:
        """"2 source videos are too short for one clip of 49 frames (--clip-frames 49): a.mp4 has
        17 frames, ..." (empty when none)."""
        if not self.too_short:
            return ""
        need = f"one clip of {self.clip_frames} frames (--clip-frames {self.clip_frames}"
        if self.frame_step > 1:
            need += f" at --frame-step {self.frame_step}: {self.clip_span} source frames"
        need += " in one scene)" if any(sc is not None and f is not None and sc < f
                                        for _, f, sc in self.too_short) else ")"
        named = []
        for path, frames, scene in self.too_short[:max_named]:
            text = f"{path} has {frames if frames is not None else '?'} frames"
            if scene is not None and frames is not None and scene < frames:
                text += f" (longest scene {scene})"
            named.append(text)
        more = len(self.too_short) - len(named)
        n = len(self.too_short)
        return (f"{n} source video{'s are' if n > 1 else ' is'} too short for {need}: "
                + ", ".join(named) + (f" and {more} more" if more else ""))

    def hint(self) -> str:
        """What to change when the videos are too short: the longest scene seen."""
        scenes = [s for _, _, s in self.too_short if s is not None]
        if not scenes:
            return ""
        fit = (max(scenes) - 1) // self.frame_step + 1
        return f"--clip-frames {fit} or less fits the longest of them"

    def format(self, max_failures: int = 10) -> str:
        lines = [f"{self.dataset}: {self.done} clips done, {self.failed} failed, {self.skipped} "
                 f"skipped (already done); {self.sources_failed} source videos failed"]
        if self.reconciled:
            lines.append(f"  {self.reconciled} clips written by an interrupted run marked done")
        if self.too_short:
            lines.append(f"  {self.too_short_text(max_failures)}")
        for cid, stage, error in self.failures[:max_failures]:
            lines.append(f"  failed {cid} [{stage}]: {error}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more (see {MANIFEST})")
        return "\n".join(lines)


def curate(input_path: str | os.PathLike, out: str | os.PathLike, config: CurationConfig | None = None,
           models: CurationModels | None = None, progress: bool = True) -> CurationSummary:
    """Curate the videos listed by `input_path` (folder, CSV or JSONL) into the dataset at `out`
    (created if missing; resumed if it has a manifest). Returns the run's summary.

    When the dataset ends with no clip at all (every video too short, unreadable, or every clip
    failed) this raises DatasetError saying why, naming the videos and clips, and removes `out` if
    this run created it or found it empty (so a re-run with other settings starts clean)."""
    from ..dataset import DatasetWriter
    from .ingest import read_inputs

    cfg = (config or CurationConfig()).check()
    out = Path(out)
    try:
        sources = read_inputs(input_path)
    except UnicodeDecodeError as e:
        raise DatasetError(f"{input_path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if cfg.objects_from == "given" and not any(s.objects for s in sources):
        raise ConfigError(f"{input_path}: --objects-from given needs an 'objects' column (CSV/JSONL) "
                          "or <video>.json files with 'objects'")
    fresh = not out.exists() or (out.is_dir() and not any(out.iterdir()))
    writer = DatasetWriter(out)
    models = models or CurationModels.from_config(cfg)
    with Manifest(out / MANIFEST) as manifest:
        manifest.check_settings(cfg.dataset_settings())
        if cfg.retry_failed:
            manifest.retry_failed()
        manifest.add_sources(sources)
        summary = CurationSummary(dataset=str(out), clip_frames=cfg.clip_frames,
                                  frame_step=cfg.frame_step)
        summary.reconciled = len(manifest.reconcile(writer.ids()))
        (plan_sources_ray if cfg.engine == "ray" else plan_sources)(manifest, cfg, progress)
        summary.skipped = manifest.counts()["clips"]["done"]
        before = manifest.counts()["clips"]
        todo = [new_task(c) for c in manifest.clips(("pending", "running"))]
        if todo:
            run = run_ray if cfg.engine == "ray" else run_local
            run(todo, manifest, writer, cfg, models, progress)
        after = manifest.counts()
        summary.done = after["clips"]["done"] - summary.skipped
        summary.failed = after["clips"]["failed"] - before["failed"]
        summary.sources_failed = after["sources"]["failed"]
        summary.failures = manifest.failures()
        summary.too_short = [(s.path, s.num_frames, s.longest_scene)
                             for s in manifest.short_sources()]
    if not writer.ids():
        if fresh:
            shutil.rmtree(out)
        raise DatasetError(_nothing_curated(input_path, out, fresh, summary))
    return summary


def _nothing_curated(input_path, out: Path, removed: bool, summary: CurationSummary,
                     max_named: int = 3) -> str:
    """Why a run left the dataset without a clip, on one line."""
    reasons = []
    if summary.too_short:
        hint = summary.hint()
        reasons.append(summary.too_short_text(max_named) + (f"; {hint}" if hint else ""))
    for what, stages in (("source video", ("ingest",)), ("clip", None)):
        failed = [f for f in summary.failures
                  if (f[1] in stages if stages else f[1] != "ingest")]
        if failed:
            named = "; ".join(f"{i} [{stage}]: {error}" for i, stage, error in failed[:max_named])
            more = f"; and {len(failed) - max_named} more" if len(failed) > max_named else ""
            reasons.append(f"{len(failed)} {what}{'s' if len(failed) > 1 else ''} failed: "
                           f"{named}{more}")
    if not reasons:
        reasons.append("no source video gave a clip")
    where = f"{out} removed" if removed else f"{out} left as it was"
    return f"{input_path}: no clip curated ({where}): " + "; ".join(reasons)


def plan_sources(manifest: Manifest, cfg: CurationConfig, progress: bool = True) -> None:
    """Scene-detect every source not yet planned and insert its clips (a video that cannot be read
    fails with the reason; the others go on)."""
    from tqdm import tqdm

    from .ingest import plan_source

    ingest = cfg.ingest()
    for source in tqdm(manifest.sources(("pending", "running")), desc="scenes", unit="video",
                       disable=not progress):
        manifest.start_source(source.id)
        try:
            plan = plan_source(source, ingest)
        except Exception as e:  # noqa: BLE001 - a bad video fails alone
            manifest.fail_source(source.id, f"{type(e).__name__}: {e}")
            continue
        manifest.finish_source(source.id, plan.clips, plan.num_frames, plan.longest_scene)


def _record_failures(manifest: Manifest, tasks: list[dict]) -> list[dict]:
    ok = []
    for t in tasks:
        if t["error"]:
            manifest.fail(t["id"], t["stage"], t["error"])
        else:
            ok.append(t)
    return ok


class _Lazy:
    """Builds a model on first use."""

    def __init__(self, factory):
        self.factory, self.value = factory, None

    def __call__(self):
        if self.value is None:
            self.value = self.factory()
        return self.value


def run_local(tasks: list[dict], manifest: Manifest, writer, cfg: CurationConfig,
              models: CurationModels, progress: bool = True) -> None:
    """All stages in this process, `cfg.batch_size` clips at a time; each clip is written (and
    marked done) as soon as it is tracked."""
    import json

    from tqdm import tqdm

    objects = _Lazy(models.objects)
    grounder = _Lazy(models.grounder)
    tracker = _Lazy(models.tracker)
    bar = tqdm(total=len(tasks), desc="curate", unit="clip", disable=not progress)
    try:
        for i in range(0, len(tasks), cfg.batch_size):
            batch = tasks[i:i + cfg.batch_size]
            manifest.start([t["id"] for t in batch], "load")
            batch = _record_failures(manifest, [load_stage(t, cfg.size) for t in batch])

            manifest.start([t["id"] for t in batch], "objects")
            finder = objects() if cfg.objects_from == "caption" and batch else None
            batch = _record_failures(manifest, objects_stage(batch, finder, cfg.objects_from,
                                                             cfg.max_objects))
            for t in batch:
                manifest.set_objects(t["id"], json.loads(t["objects"]))

            manifest.start([t["id"] for t in batch], "grounding")
            if batch:
                batch = _record_failures(manifest, grounding_stage(batch, grounder()))

            for t in batch:
                manifest.start([t["id"]], "tracking")
                t = tracking_stage(t, tracker())
                if t["error"]:
                    manifest.fail(t["id"], t["stage"], t["error"])
                    continue
                _write(t, manifest, writer, cfg)
                t["frames"] = None  # free the pixels
            bar.update(len(tasks[i:i + cfg.batch_size]))
    finally:
        bar.close()


def _write(task: dict, manifest: Manifest, writer, cfg: CurationConfig) -> None:
    manifest.start([task["id"]], "write")
    try:
        write_stage(task, writer, cfg.test_fraction)
    except Exception as e:  # noqa: BLE001 - e.g. a trajectory the dataset rejects
        manifest.fail(task["id"], "write", f"{type(e).__name__}: {e}")
        return
    manifest.done(task["id"])


# ------------------------------------------------------------------------------------------ ray


def _rows(batch: dict) -> list[dict]:
    """A Ray Data numpy batch (dict of columns) -> list of task dicts with plain values."""
    n = len(batch["id"])
    rows = []
    for i in range(n):
        row = {}
        for k, col in batch.items():
            v = col[i]
            row[k] = v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v
        rows.append(row)
    return rows


def _columns(rows: list[dict]) -> dict:
    import numpy as np

    out = {}
    for k in rows[0]:
        values = [r[k] for r in rows]
        if k == "frames":
            shapes = {v.shape for v in values}
            if len(shapes) == 1:
                out[k] = np.stack(values)
            else:  # clips of different sizes: a ragged column
                col = np.empty(len(values), dtype=object)
                col[:] = values
                out[k] = col
        else:
            out[k] = np.asarray(values)
    return out


class _LoadStage:
    def __init__(self, size):
        self.size = size

    def __call__(self, row: dict) -> dict:
        return load_stage(dict(row), self.size)


class _ObjectsActor:
    def __init__(self, factory, objects_from: str, max_objects: int):
        self.finder = factory() if objects_from == "caption" else None
        self.objects_from, self.max_objects = objects_from, max_objects

    def __call__(self, batch: dict) -> dict:
        return _columns(objects_stage(_rows(batch), self.finder, self.objects_from, self.max_objects))


class _GroundingActor:
    def __init__(self, factory):
        self.grounder = factory()

    def __call__(self, batch: dict) -> dict:
        return _columns(grounding_stage(_rows(batch), self.grounder))


class _TrackingActor:
    def __init__(self, factory):
        self.tracker = factory()

    def __call__(self, batch: dict) -> dict:
        return _columns([tracking_stage(t, self.tracker) for t in _rows(batch)])


def _init_ray(cfg: CurationConfig):
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # results in input order, like the local runner
    ctx.enable_progress_bars = False  # the driver shows one bar over clips
    return ray


class _PlanStage:
    """Ray task: scene-detect one source -> its planned clips (or the reason it failed)."""

    def __init__(self, ingest):
        self.ingest = ingest

    def __call__(self, row: dict) -> dict:
        import json

        from .ingest import plan_source
        from .manifest import SourceRow

        source = SourceRow(id=row["id"], path=row["path"], caption=row["caption"],
                           objects=json.loads(row["objects"]) if row["objects"] else None)
        try:
            plan = plan_source(source, self.ingest)
        except Exception as e:  # noqa: BLE001
            return {"id": row["id"], "clips": "", "num_frames": -1, "longest_scene": -1,
                    "error": f"{type(e).__name__}: {e}"}
        return {"id": row["id"], "clips": json.dumps([c.__dict__ for c in plan.clips]),
                "num_frames": plan.num_frames, "longest_scene": plan.longest_scene, "error": ""}


def plan_sources_ray(manifest: Manifest, cfg: CurationConfig, progress: bool = True) -> None:
    """`plan_sources` with the scene detection spread over the Ray cluster."""
    import json

    from tqdm import tqdm

    from .manifest import ClipRow

    sources = manifest.sources(("pending", "running"))
    if not sources:
        return
    ray = _init_ray(cfg)
    for s in sources:
        manifest.start_source(s.id)
    rows = [{"id": s.id, "path": s.path, "caption": s.caption,
             "objects": json.dumps(s.objects) if s.objects else ""} for s in sources]
    ds = ray.data.from_items(rows).map(_PlanStage(cfg.ingest()))
    for row in tqdm(ds.iter_rows(), total=len(rows), desc="scenes (ray)", unit="video",
                    disable=not progress):
        if row["error"]:
            manifest.fail_source(row["id"], row["error"])
        else:
            manifest.finish_source(row["id"], [ClipRow(**c) for c in json.loads(row["clips"])],
                                   int(row["num_frames"]), int(row["longest_scene"]))


def run_ray(tasks: list[dict], manifest: Manifest, writer, cfg: CurationConfig,
            models: CurationModels, progress: bool = True) -> None:
    """The same stages on Ray Data (the cluster at cfg.ray_address, a running one, or a new local
    one): decoding in tasks, each model stage an actor pool of cfg.actors actors with
    cfg.gpus_per_actor GPUs each; the driver writes clips and the manifest."""
    from tqdm import tqdm

    ray = _init_ray(cfg)
    gpus = cfg.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    pool = dict(compute=ray.data.ActorPoolStrategy(size=cfg.actors), num_gpus=gpus,
                batch_format="numpy")

    ds = ray.data.from_items(tasks).map(_LoadStage(cfg.size))
    if cfg.objects_from == "caption":
        ds = ds.map_batches(_ObjectsActor, batch_size=cfg.batch_size,
                            fn_constructor_kwargs={"factory": models.objects,
                                                   "objects_from": cfg.objects_from,
                                                   "max_objects": cfg.max_objects}, **pool)
    else:
        ds = ds.map_batches(_ObjectsActor(None, "given", cfg.max_objects),
                            batch_size=cfg.batch_size, batch_format="numpy")
    ds = ds.map_batches(_GroundingActor, batch_size=cfg.batch_size,
                        fn_constructor_kwargs={"factory": models.grounder}, **pool)
    ds = ds.map_batches(_TrackingActor, batch_size=1,
                        fn_constructor_kwargs={"factory": models.tracker}, **pool)

    manifest.start([t["id"] for t in tasks], "load")
    with tqdm(total=len(tasks), desc="curate (ray)", unit="clip", disable=not progress) as bar:
        for row in ds.iter_rows():
            task = dict(row)
            if task["error"]:
                manifest.fail(task["id"], task["stage"], task["error"])
            else:
                _write(task, manifest, writer, cfg)
            bar.update(1)
