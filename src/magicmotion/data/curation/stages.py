"""The per-clip stages of curation, shared by the local and the Ray runner.

A clip travels as a task: a flat dict of plain values (JSON text for structured fields, so Ray Data
can carry it in Arrow columns):

    id, source, path, start_frame, start_pts (-1: unknown), num_frames, frame_step, fps, caption,
    given_objects (JSON list or ""), stage, error ("" while it is fine),
    frames (uint8 (T, H, W, 3) once loaded), objects (JSON list), detections (JSON list of
    {"label", "box", "score"}), trajectory (JSON spec)

Stages, in order: load -> objects -> grounding -> tracking -> write. A stage leaves a task that
already failed untouched; a stage that raises for one clip marks that clip failed (stage and reason)
and the run goes on. The batched stages (objects, grounding) run the model once per batch and, if
that raises, once per clip so only the clips at fault fail.
"""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from ...errors import ConfigError
from ...perception import (BOX_THRESHOLD, DEFAULT_GROUNDING, DEFAULT_SAM2, TEXT_THRESHOLD, Detection,
                           load_grounder, load_video_tracker, resolve_device)
from .ingest import IngestConfig
from .manifest import ClipRow
from .objects import DEFAULT_LLM, GivenObjects

OBJECTS_FROM = ("caption", "given")
ENGINES = ("local", "ray")


@dataclass
class CurationConfig:
    """Settings of `curate` (the CLI's options). clip_frames / frame_step / scene_threshold /
    min_scene_frames / max_clips_per_scene / size decide which clips exist and are fixed for a
    dataset; the rest may change between runs."""

    objects_from: str = "caption"
    llm: str = DEFAULT_LLM
    grounding: str = DEFAULT_GROUNDING
    sam2: str = DEFAULT_SAM2
    device: str = "auto"
    clip_frames: int = 49
    frame_step: int = 1
    scene_threshold: float = 27.0
    min_scene_frames: int = 15
    max_clips_per_scene: int | None = None
    size: tuple[int, int] | None = None
    box_threshold: float = BOX_THRESHOLD
    text_threshold: float = TEXT_THRESHOLD
    max_objects: int = 5
    llm_retries: int = 2
    batch_size: int = 8
    test_fraction: float = 0.0
    engine: str = "local"
    ray_address: str | None = None
    actors: int = 1
    gpus_per_actor: float | None = None
    retry_failed: bool = False

    def check(self) -> "CurationConfig":
        if self.objects_from not in OBJECTS_FROM:
            raise ConfigError(f"objects_from must be one of {OBJECTS_FROM}, got {self.objects_from!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        for name in ("box_threshold", "text_threshold", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        for name in ("max_objects", "batch_size", "actors"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.llm_retries <= 100:
            raise ConfigError(f"llm_retries must be in 0..100, got {self.llm_retries}")
        if self.gpus_per_actor is not None and not 0 <= self.gpus_per_actor <= 1024:  # NaN fails too
            raise ConfigError(f"gpus_per_actor must be a number in 0..1024, got {self.gpus_per_actor}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConfigError(f"size must be (W, H) > 0, got {self.size}")
        if self.size is not None:
            from ...limits import check_size

            check_size(*self.size, "--size", ConfigError)
        self.ingest().check()
        return self

    def ingest(self) -> IngestConfig:
        return IngestConfig(clip_frames=self.clip_frames, frame_step=self.frame_step,
                            scene_threshold=self.scene_threshold,
                            min_scene_frames=self.min_scene_frames,
                            max_clips_per_scene=self.max_clips_per_scene)

    def dataset_settings(self) -> dict:
        """The settings that decide which clips exist (stored in the manifest)."""
        keys = ("clip_frames", "frame_step", "scene_threshold", "min_scene_frames",
                "max_clips_per_scene", "size")
        return {k: v for k, v in asdict(self).items() if k in keys}


# ------------------------------------------------------------------------------------ models


def load_objects_model(name: str, device: str = "auto", max_objects: int = 5, retries: int = 2):
    from .objects import LanguageModelObjects

    return LanguageModelObjects.from_pretrained(name, device=resolve_device(device),
                                                max_objects=max_objects, retries=retries)


@dataclass
class CurationModels:
    """Zero-argument factories for the three models (picklable, so Ray actors build their own).

    objects(): callable(captions: list[str]) -> list[ObjectsResult] (unused with objects given);
    grounder(): callable(images, names) -> list[list[Detection]];
    tracker(): callable(frames (T, H, W, 3), boxes (N, 4)) -> bool (N, T, H, W).
    Tests and other back ends pass their own factories with the same interfaces."""

    objects: object
    grounder: object
    tracker: object

    @classmethod
    def from_config(cls, cfg: CurationConfig) -> "CurationModels":
        return cls(
            objects=functools.partial(load_objects_model, cfg.llm, cfg.device, cfg.max_objects,
                                      cfg.llm_retries),
            grounder=functools.partial(load_grounder, cfg.grounding, cfg.device, cfg.box_threshold,
                                       cfg.text_threshold),
            tracker=functools.partial(load_video_tracker, cfg.sam2, cfg.device))


# ------------------------------------------------------------------------------------- tasks

EMPTY_FRAMES = np.zeros((0, 1, 1, 3), dtype=np.uint8)


def new_task(clip: ClipRow) -> dict:
    return {"id": clip.id, "source": clip.source, "path": clip.path,
            "start_frame": int(clip.start_frame),
            "start_pts": -1 if clip.start_pts is None else int(clip.start_pts),
            "num_frames": int(clip.num_frames), "frame_step": int(clip.frame_step),
            "fps": float(clip.fps), "caption": clip.caption,
            "given_objects": "" if clip.given_objects is None else json.dumps(clip.given_objects),
            "stage": "load", "error": "", "frames": EMPTY_FRAMES, "objects": "", "detections": "",
            "trajectory": ""}


def _clip_row(task: dict) -> ClipRow:
    pts = int(task["start_pts"])
    return ClipRow(id=str(task["id"]), source=str(task["source"]), path=str(task["path"]),
                   start_frame=int(task["start_frame"]), num_frames=int(task["num_frames"]),
                   frame_step=int(task["frame_step"]), fps=float(task["fps"]),
                   caption=str(task["caption"]), start_pts=None if pts < 0 else pts)


def _fail(task: dict, stage: str, error) -> dict:
    task["stage"] = stage
    task["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    task["frames"] = EMPTY_FRAMES  # failed clips carry no pixels further
    return task


def _ok(task: dict) -> bool:
    return not task["error"]


def load_stage(task: dict, size: tuple[int, int] | None = None) -> dict:
    """Decode the clip's frames (and resize + centre-crop them to `size` = (W, H) if given)."""
    from ...trajectory import resize_crop
    from .ingest import read_clip

    if not _ok(task):
        return task
    task["stage"] = "load"
    try:
        frames = read_clip(_clip_row(task))
        if size is not None:
            frames = resize_crop(frames, tuple(size))
        task["frames"] = np.ascontiguousarray(frames, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - any failure of one clip fails that clip only
        _fail(task, "load", e)
    return task


def _batched(tasks: list[dict], stage: str, run, apply) -> list[dict]:
    """run(list of ok tasks) -> results for all; on an exception, run each task alone."""
    todo = [t for t in tasks if _ok(t)]
    for t in todo:
        t["stage"] = stage
    if not todo:
        return tasks
    try:
        results = run(todo)
    except Exception:  # noqa: BLE001 - isolate the clip at fault
        results = []
        for t in todo:
            try:
                results.append(run([t])[0])
            except Exception as e:  # noqa: BLE001
                _fail(t, stage, e)
                results.append(None)
    for t, r in zip(todo, results):
        if r is not None and _ok(t):
            apply(t, r)
    return tasks


def objects_stage(tasks: list[dict], finder=None, objects_from: str = "caption",
                  max_objects: int = 5) -> list[dict]:
    """The objects of each clip: from its caption with `finder` (a language model), or given."""
    if objects_from == "given":
        given = GivenObjects(max_objects)

        def run(batch):
            return given([json.loads(t["given_objects"]) if t["given_objects"] else None
                          for t in batch])
    else:
        if finder is None:
            raise ConfigError("objects from captions need a language model")

        def run(batch):
            return finder([str(t["caption"]) for t in batch])

    def apply(task, result):
        if result.objects:
            task["objects"] = json.dumps(result.objects)
        else:
            _fail(task, "objects", result.error or "no objects")

    return _batched(tasks, "objects", run, apply)


def grounding_stage(tasks: list[dict], grounder) -> list[dict]:
    """A box for each object in the clip's first frame; a clip where none is found fails."""
    def run(batch):
        return grounder([t["frames"][0] for t in batch], [json.loads(t["objects"]) for t in batch])

    def apply(task, detections):
        if not detections:
            names = ", ".join(json.loads(task["objects"]))
            _fail(task, "grounding", f"none of the objects ({names}) found in the first frame "
                                     "above the box and text thresholds")
        else:
            task["detections"] = json.dumps([d.to_dict() for d in detections])

    return _batched(tasks, "grounding", run, apply)


def masks_to_trajectory(masks: np.ndarray, labels: list[str], caption: str = "",
                        source: str = ""):
    """bool (N, T, H, W) -> Trajectory with objects 1..N' (those whose frame-0 mask is not empty,
    renumbered in order): a mask on every frame, a box wherever the mask is not empty."""
    from ...trajectory import ObjectTrack, Trajectory

    masks = np.asarray(masks, dtype=bool)
    n, t, h, w = masks.shape
    traj = Trajectory(width=w, height=h, num_frames=t, caption=caption, source=source)
    for k in range(n):
        if not masks[k, 0].any():
            continue
        label = labels[k] if k < len(labels) else ""
        traj.objects.append(ObjectTrack.from_masks(len(traj.objects) + 1, label, masks[k]))
    return traj


def tracking_stage(task: dict, tracker) -> dict:
    """Masks of the grounded objects on every frame -> the clip's trajectory (JSON spec)."""
    from ...trajectory import to_dict

    if not _ok(task):
        return task
    task["stage"] = "tracking"
    try:
        detections = [Detection.from_dict(d) for d in json.loads(task["detections"])]
        boxes = np.stack([d.box for d in detections])
        masks = tracker(task["frames"], boxes)
        expected = (len(detections), *task["frames"].shape[:3])
        if tuple(masks.shape) != expected:
            raise ValueError(f"the tracker gave masks of shape {tuple(masks.shape)}, expected {expected}")
        traj = masks_to_trajectory(masks, [d.label for d in detections], caption=str(task["caption"]),
                                   source=str(task["id"]))
        if not traj.objects:
            return _fail(task, "tracking", "no object has a mask on the first frame")
        traj.validate()
        task["trajectory"] = json.dumps(to_dict(traj))
    except Exception as e:  # noqa: BLE001
        _fail(task, "tracking", e)
    return task


def split_of(clip_id: str, test_fraction: float) -> str:
    """"test" for a fixed share of clips (by a hash of the id), else "train"."""
    return "test" if zlib.crc32(clip_id.encode()) / 2**32 < test_fraction else "train"


def write_stage(task: dict, writer, test_fraction: float = 0.0) -> dict:
    """Add the clip to the dataset (DatasetWriter.add: files first, then the index line); returns
    the index record."""
    from ...trajectory import from_dict

    traj = from_dict(json.loads(task["trajectory"]), source=str(task["id"]))
    detections = json.loads(task["detections"])
    by_label = {d["label"]: d["score"] for d in detections}
    return writer.add(
        str(task["id"]), task["frames"], traj, str(task["caption"]), fps=float(task["fps"]),
        split=split_of(str(task["id"]), test_fraction), source=str(task["path"]),
        source_id=str(task["source"]), start_frame=int(task["start_frame"]),
        frame_step=int(task["frame_step"]), objects=[o.label for o in traj.objects],
        grounding_scores=[round(float(by_label.get(o.label, 0.0)), 4) for o in traj.objects])
