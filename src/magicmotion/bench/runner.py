"""Running a benchmark: one generated video per benchmark clip, from the clip's first frame, caption and
trajectory, written to RUN/videos/<id>.mp4.

    RUN/
      run.json            the settings (a run resumes only with the same settings)
      videos/<id>.mp4     one video per clip, written atomically: present means complete
      previews/<id>.png   the trajectory drawn over the generated frames (contact sheet)

Resumable: clips whose video exists are skipped, so a killed run loses at most the clip in flight.
Multi-process (`accelerate launch` / `torchrun ... magicmotion bench run`): process i of n generates
clips i, i + n, ... of the benchmark's list, into the same folder; process 0 writes run.json, and marks
it complete once every process is done and every video is there. With `context_parallel` ("ring" or
"ulysses", `magicmotion.pipelines.parallel`) all processes make every clip together, each video split
across them, and only rank 0 writes.
`ground_truth=True` makes the "generated" videos the benchmark's own clips (the segmenter's ceiling);
`control_scale=0` gives the base model without the trajectory (the floor). Both are ordinary runs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BenchError, MagicMotionError
from ..limits import MAX_FRAMES, check_int, check_number, check_seed, check_size
from ..trajectory import KINDS, Trajectory, sparsify

RUN_INFO = "run.json"
VIDEOS = "videos"
PREVIEWS = "previews"
RUN_VERSION = 1

# generate_fn(clip, condition trajectory) -> frames uint8 (T, H, W, 3), or (frames, maps)
GenerateFn = Callable[..., object]


def condition_trajectory(traj: Trajectory, kind: str, sparse_keys: int = 4) -> Trajectory:
    """What the model is conditioned on for `kind`: the benchmark trajectory as is for "mask" and
    "box" (masks / boxes on every frame; frame 0 is the mask in both), and for "sparse_box" frame 0
    plus `sparse_keys` evenly spaced key frames with boxes."""
    if kind not in KINDS:
        raise BenchError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "sparse_box":
        return sparsify(traj, num_keys=sparse_keys, mode="even")
    return traj


def read_run(run_dir: str | os.PathLike) -> dict:
    """RUN/run.json; BenchError when the folder is not a benchmark run."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise BenchError(f"{run_dir}: not a benchmark run (no {RUN_INFO}); make one with "
                         "`magicmotion bench run BENCH --out RUN`")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: malformed ({e})") from None
    if not isinstance(info, dict) or "settings" not in info or "clips" not in info:
        raise BenchError(f"{path}: not a run description (no settings / clips)")
    return info


def bench_records(bench_root: str | os.PathLike) -> list[dict]:
    from ..data.dataset import read_index

    try:
        records = read_index(bench_root)
    except MagicMotionError as e:
        raise BenchError(f"{bench_root}: not a benchmark set ({e})") from None
    if not records:
        raise BenchError(f"{bench_root}: the benchmark set has no clips")
    return records


def _check_settings(settings: dict) -> None:
    """Generation settings in range before any folder is made (BenchError naming the setting)."""
    check_int(settings["num_inference_steps"], "steps", lo=1, hi=1000, error=BenchError)
    check_seed(settings["seed"], "seed", error=BenchError)
    for name in ("guidance_scale", "control_scale", "trajectory_guidance"):
        check_number(settings[name], name, lo=0, hi=100, error=BenchError)
    if settings["sparse_keys"] is not None:
        check_int(settings["sparse_keys"], "sparse_keys", lo=1, hi=MAX_FRAMES, error=BenchError)


def run_bench(bench_root: str | os.PathLike, out: str | os.PathLike, base=None, controlnet=None,
              kind: str = "box", control_scale: float = 1.0, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, trajectory_guidance: float = 1.0, seed: int = 0,
              limit: int | None = None, ground_truth: bool = False, size: tuple[int, int] | None = None,
              sparse_keys: int = 4, device: str | None = None, dtype=None, offload: str = "none",
              label: str | None = None, speed: dict | None = None, memory: dict | None = None,
              pipeline=None, generate_fn: GenerateFn | None = None, progress: bool = True,
              process_index: int = 0, num_processes: int = 1, wait_for_others: Callable[[], None] | None = None,
              context_parallel: str | None = None) -> dict:
    """Generate a video for each of the first `limit` (default all) clips of the benchmark set.

    base, controlnet: as `magicmotion.pipelines.loading.load_pipeline` (base None: the shipped tiny
    model); kind: trajectory kind; control_scale: ControlNet conditioning scale (0: the floor);
    num_inference_steps, guidance_scale: default the model's recommended settings (its
    magicmotion.json, `magicmotion.pipelines.settings`: 25 and 1 for the shipped tiny model), the
    paper's 50 and 6 for a custom generate_fn with a base;
    trajectory_guidance: the pipelines' `trajectory_guidance_scale` (1: off);
    speed: the pipelines' speed options (`cfg_mode`, `control_every`, `control_dense`,
    `control_branches`; see `magicmotion.pipelines.guidance`), recorded in run.json when given;
    memory: `load_pipeline`'s `weights_dtype`, `cache`, `vae_tiling`, `lora`, and `lora_scale` (the
    calls' `attention_kwargs`), recorded in run.json when any differs from the default;
    seed: the same seed for every clip; size: (W, H) of the output (default: the pipeline's choice from
    the clip's size); ground_truth: copy the benchmark's own videos instead (the ceiling);
    pipeline: an already loaded MagicMotion pipeline (then base / controlnet only name it in run.json).
    generate_fn(clip, trajectory) -> frames uint8 (T, H, W, 3) or (frames, maps) replaces the pipeline
    (tests, other models);
    process_index, num_processes: this process's share of the clips (clips process_index,
    process_index + num_processes, ...); wait_for_others: a barrier across the processes (accelerate's
    `wait_for_everyone`), called after process 0 has set the folder up and again before it marks the
    run complete; context_parallel: "ring" / "ulysses": every process of the launch makes every clip,
    split across them (`enable_context_parallel` on the loaded pipeline), and only rank 0 writes
    (process_index 0 and num_processes 1 on all). Returns {"out", "clips", "generated", "skipped"}
    (this process's share)."""
    from tqdm import tqdm

    from ..data.reader import Dataset

    bench_root, out = Path(bench_root), Path(out)
    records = bench_records(bench_root)
    if limit is not None:
        if limit < 1:
            raise BenchError(f"limit must be >= 1, got {limit}")
        records = records[:limit]
    if kind not in KINDS:
        raise BenchError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not 0 <= process_index < num_processes:
        raise BenchError(f"process {process_index} of {num_processes}: expected 0 <= index < count")
    writes = True
    if context_parallel is not None:
        from ..pipelines.parallel import launch_world

        writes = launch_world()[0] == 0
    together = num_processes > 1 or context_parallel is not None
    wait = wait_for_others if together and wait_for_others is not None else (lambda: None)
    sources = {}
    if not ground_truth and (guidance_scale is None or num_inference_steps is None):
        from ..pipelines.settings import ModelSettings, pipeline_settings

        if pipeline is not None:
            recommended = pipeline_settings(pipeline)
        elif generate_fn is not None and base is not None:  # a custom generator names a model it runs
            recommended = ModelSettings({"guidance_scale": 6.0, "num_inference_steps": 50},
                                        {"guidance_scale": "paper", "num_inference_steps": "paper"})
        else:
            from ..pipelines.loading import model_settings

            recommended = model_settings(base, controlnet, kind)[1]
        recommended = recommended.with_arguments(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps)
        guidance_scale, num_inference_steps = recommended["guidance_scale"], recommended["num_inference_steps"]
        sources = {k: recommended.sources[k] for k in ("guidance_scale", "num_inference_steps")}
    if ground_truth:
        settings = {"ground_truth": True, "size": list(size) if size else None}
    else:
        settings = {"ground_truth": False, "kind": kind, "base": _name(base), "controlnet": _name(controlnet),
                    "control_scale": float(control_scale), "num_inference_steps": int(num_inference_steps),
                    "guidance_scale": float(guidance_scale), "trajectory_guidance": float(trajectory_guidance),
                    "setting_sources": sources,
                    "seed": int(seed),
                    "size": list(size) if size else None,
                    "sparse_keys": int(sparse_keys) if kind == "sparse_box" else None,
                    "generator": "custom" if generate_fn is not None else "pipeline",
                    "pipeline": type(pipeline).__name__ if pipeline is not None else None}
        if speed:  # only when given, so that runs made before the options still resume
            from ..pipelines.guidance import check_speed_options

            speed = dict(speed)
            try:
                check_speed_options(**{**dict(cfg_mode="batched", control_every=1, control_dense=0.0,
                                              control_branches="both"), **speed})
            except (MagicMotionError, TypeError) as e:
                raise BenchError(f"speed options {speed}: {e}") from None
            settings["speed"] = speed
        memory = {k: v for k, v in (memory or {}).items() if v not in (None, False, "none", "default")}
        if memory:  # only when given, so that runs made before the options still resume
            from ..pipelines.loading import check_memory_options

            try:
                check_memory_options(weights_dtype=memory.get("weights_dtype", "default"),
                                     cache=memory.get("cache", "none"))
            except MagicMotionError as e:
                raise BenchError(f"memory options {memory}: {e}") from None
            settings["memory"] = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in memory.items()}
        _check_settings(settings)
    if size is not None:
        check_size(*size, error=BenchError, what="size")
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out}: is a file, expected a run folder")
    if out.resolve() == bench_root.resolve() or bench_root.resolve() in out.resolve().parents:
        raise BenchError(f"{out}: a run folder must be outside the benchmark {bench_root}")
    if process_index == 0 and writes:  # the others wait: no clip is written while run.json or the debris change
        out.mkdir(parents=True, exist_ok=True)
        (out / VIDEOS).mkdir(exist_ok=True)
        (out / PREVIEWS).mkdir(exist_ok=True)
        info = _start_run(out, bench_root, settings, records, label)
        _remove_debris(out / VIDEOS)
    wait()
    if process_index != 0 or not writes:
        info = read_run(out)
        if info["settings"] != settings:
            raise BenchError(f"{out}: process {process_index} has other settings than process 0")
    records_all = records
    records = records[process_index::num_processes]

    todo = [r for r in records if not (out / VIDEOS / f"{r['id']}.mp4").is_file()]
    reader = Dataset(bench_root, num_frames=None, sampling="start")
    generate = None
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc=f"bench run {out.name}"
               + (f" [{process_index + 1}/{num_processes}]" if num_processes > 1 else ""),
               unit="clip", disable=not progress or process_index != 0 or not writes)
    with bar:
        for record in todo:
            bar.set_postfix_str(record["id"])
            video = out / VIDEOS / f"{record['id']}.mp4"
            if ground_truth:
                _write_ground_truth(bench_root, record, reader, video, size)
            else:
                if generate is None:  # the model loads only when a clip needs it
                    if generate_fn is None and pipeline is None:
                        from ..pipelines.loading import load_pipeline

                        loading = {k: v for k, v in (memory or {}).items() if k != "lora_scale"}
                        pipeline = load_pipeline(base=base, controlnet=controlnet, kind=kind,
                                                 device=device, dtype=dtype, offload=offload, **loading)
                        pipeline.set_progress_bar_config(leave=False, disable=not writes)  # the clips bar stays
                        if context_parallel is not None:
                            from ..pipelines.parallel import enable_context_parallel

                            enable_context_parallel(pipeline, context_parallel)
                    generate = generate_fn or pipeline_generator(
                        pipeline, kind=kind, control_scale=control_scale,
                        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        trajectory_guidance=trajectory_guidance, seed=seed, size=size,
                        speed={**(speed or {}), **({"attention_kwargs": {"scale": memory.get("lora_scale", 1.0)}}
                                                   if (memory or {}).get("lora") else {})})
                _generate_one(reader, record, kind, sparse_keys, generate, video, out / PREVIEWS, writes)
            bar.update(1)
    wait()
    if process_index == 0 and writes and all((out / VIDEOS / f"{r['id']}.mp4").is_file() for r in records_all):
        info["complete"] = True
        _write_json(out / RUN_INFO, info)
    return {"out": str(out), "clips": len(records), "generated": len(todo),
            "skipped": len(records) - len(todo)}


def _name(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return type(value).__name__


def _write_json(path: Path, data: dict) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def _start_run(out: Path, bench_root: Path, settings: dict, records: list[dict], label: str | None) -> dict:
    """Write (or check, when resuming) RUN/run.json."""
    path = out / RUN_INFO
    ids = [r["id"] for r in records]
    bench = str(bench_root.resolve())
    if path.is_file():
        old = read_run(out)
        if old.get("bench") != bench:
            raise BenchError(f"{out}: holds a run of the benchmark {old.get('bench')}, not {bench}; "
                             "use another --out")
        if old["settings"] != settings:
            diff = [k for k in sorted(set(old["settings"]) | set(settings))
                    if old["settings"].get(k) != settings.get(k)]
            raise BenchError(
                f"{out}: holds a run with other settings ("
                + ", ".join(f"{k}: {old['settings'].get(k)!r} now {settings.get(k)!r}" for k in diff)
                + "); use another --out")
        known = list(old["clips"])
        ids = known + [i for i in ids if i not in set(known)]
        label = label or old.get("label")
    info = {"version": RUN_VERSION, "bench": bench, "label": label or out.name, "settings": settings,
            "clips": ids, "complete": False}
    _write_json(path, info)
    return info


def _remove_debris(folder: Path) -> None:
    """Temporary files a killed run left behind (atomic writes that never finished)."""
    for p in folder.iterdir():
        if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
            p.unlink(missing_ok=True)


def _write_ground_truth(bench_root: Path, record: dict, reader, video: Path, size) -> None:
    from ..io import atomic_path, write_video
    from ..trajectory import resize_crop

    source = bench_root / record["video"]
    if not source.is_file():
        raise BenchError(f"{bench_root}: clip {record['id']}: video {source} not found")
    if size is None:
        with atomic_path(video) as tmp:
            shutil.copyfile(source, tmp)
        return
    clip = reader.load_clip(record)
    write_video(video, resize_crop(clip.frames, tuple(size)), fps=clip.fps)


def _generate_one(reader, record: dict, kind: str, sparse_keys: int, generate, video: Path,
                  previews: Path, writes: bool = True) -> None:
    from ..io import write_preview, write_video

    try:
        clip = reader.load_clip(record)
    except MagicMotionError as e:
        raise BenchError(str(e)) from None
    traj = condition_trajectory(clip.trajectory, kind, sparse_keys)
    result = generate(clip, traj)
    frames, maps = result if isinstance(result, tuple) else (result, None)
    if not writes:  # a context-parallel helper: rank 0 checks and writes
        return
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise BenchError(f"clip {record['id']}: the generator returned {frames.dtype} {frames.shape}, "
                         "expected uint8 (T, H, W, 3)")
    if len(frames) != len(clip.frames):
        raise BenchError(f"clip {record['id']}: the generator returned {len(frames)} frames, the "
                         f"benchmark clip has {len(clip.frames)}")
    if maps is not None and np.asarray(maps).shape == frames.shape:
        write_preview(previews / f"{record['id']}.png", frames, np.asarray(maps))
    write_video(video, frames, fps=clip.fps)  # last: its presence marks the clip done


def pipeline_generator(pipe, kind: str = "box", control_scale: float = 1.0, num_inference_steps: int = 50,
                       guidance_scale: float = 6.0, trajectory_guidance: float = 1.0, seed: int = 0,
                       size: tuple[int, int] | None = None, speed: dict | None = None) -> GenerateFn:
    """A generate_fn running a loaded MagicMotion pipeline (`load_pipeline`) on each clip: the clip's
    first frame, caption and condition trajectory, as many frames as the clip, the same seed each time."""
    from ..pipelines.generate import generate

    width, height = (None, None) if size is None else (int(size[0]), int(size[1]))

    def run(clip, trajectory):
        return generate(pipe, clip.frames[0], clip.caption, trajectory, kind,
                        num_frames=len(clip.frames), height=height, width=width,
                        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        controlnet_conditioning_scale=control_scale,
                        trajectory_guidance_scale=trajectory_guidance, seed=seed, **(speed or {}))

    return run
