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
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from .manifest import Manifest
from .stages import (CurationConfig, CurationModels, grounding_stage, load_stage, new_task,
                     objects_stage, tracking_stage, write_stage)

MANIFEST = "manifest.sqlite"


@dataclass
class CurationSummary:
    """What a run did. done / failed: clips finished or failed in this run; skipped: clips already
    done before it; sources_failed: source videos that could not be read (never planned);
    reconciled: clips found written but not marked done (a killed run), now marked done;
    failures: (id, stage, reason) of every failed source ("ingest") and clip in the manifest."""

    dataset: str
    done: int = 0
    failed: int = 0
    skipped: int = 0
    sources_failed: int = 0
    reconciled: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def format(self, max_failures: int = 10) -> str:
        lines = [f"{self.dataset}: {self.done} clips done, {self.failed} failed, {self.skipped} "
                 f"skipped (already done); {self.sources_failed} source videos failed"]
        if self.reconciled:
            lines.append(f"  {self.reconciled} clips written by an interrupted run marked done")
        for cid, stage, error in self.failures[:max_failures]:
            lines.append(f"  failed {cid} [{stage}]: {error}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more (see {MANIFEST})")
        return "\n".join(lines)


def curate(input_path: str | os.PathLike, out: str | os.PathLike, config: CurationConfig | None = None,
           models: CurationModels | None = None, progress: bool = True) -> CurationSummary:
    """Curate the videos listed by `input_path` (folder, CSV or JSONL) into the dataset at `out`
    (created if missing; resumed if it has a manifest). Returns the run's summary."""
    from ..dataset import DatasetWriter
    from .ingest import read_inputs

    cfg = (config or CurationConfig()).check()
    out = Path(out)
    sources = read_inputs(input_path)
    if cfg.objects_from == "given" and not any(s.objects for s in sources):
        raise ConfigError(f"{input_path}: --objects-from given needs an 'objects' column (CSV/JSONL) "
                          "or <video>.json files with 'objects'")
    writer = DatasetWriter(out)
    models = models or CurationModels.from_config(cfg)
    with Manifest(out / MANIFEST) as manifest:
        manifest.check_settings(cfg.dataset_settings())
        if cfg.retry_failed:
            manifest.retry_failed()
        manifest.add_sources(sources)
        summary = CurationSummary(dataset=str(out))
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
    return summary


def plan_sources(manifest: Manifest, cfg: CurationConfig, progress: bool = True) -> None:
    """Scene-detect every source not yet planned and insert its clips (a video that cannot be read
    fails with the reason; the others go on)."""
    from tqdm import tqdm

    from .ingest import plan_clips

    ingest = cfg.ingest()
    for source in tqdm(manifest.sources(("pending", "running")), desc="scenes", unit="video",
                       disable=not progress):
        manifest.start_source(source.id)
        try:
            clips = plan_clips(source, ingest)
        except Exception as e:  # noqa: BLE001 - a bad video fails alone
            manifest.fail_source(source.id, f"{type(e).__name__}: {e}")
            continue
        manifest.finish_source(source.id, clips)


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

        from .ingest import plan_clips
        from .manifest import SourceRow

        source = SourceRow(id=row["id"], path=row["path"], caption=row["caption"],
                           objects=json.loads(row["objects"]) if row["objects"] else None)
        try:
            clips = plan_clips(source, self.ingest)
        except Exception as e:  # noqa: BLE001
            return {"id": row["id"], "clips": "", "error": f"{type(e).__name__}: {e}"}
        return {"id": row["id"], "clips": json.dumps([c.__dict__ for c in clips]), "error": ""}


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
            manifest.finish_source(row["id"], [ClipRow(**c) for c in json.loads(row["clips"])])


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
