"""Phases `stages`, `examples` and `ablations`: the three MagicMotion stages trained with
`magicmotion.training.train` on configs/tiny, shipped into the package, and the bundled example."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .common import CONFIGS, FRAMES, SIZE, STAGES, accelerate_device, log

ABLATIONS = ["stage2-from-scratch", "stage2-no-seg"]

# What the shipped model recommends (base/magicmotion.json; docs/generate.md, "Model settings"): `ship`
# writes it, so a retrained package keeps it.
TINY_NOTE = ("Recommended settings of the shipped tiny model (docs/tiny-model.md): trained at 64x64 with 17 frames "
             "at 8 fps; guidance 1 because its text encoder is random (6 turns objects into blotches); 25 steps as "
             "the demo uses.")
TINY_SETTINGS = {
    "guidance_scale": 1.0,
    "num_inference_steps": 25,
    "area": SIZE[0] * SIZE[1],
    "num_frames": FRAMES,
    "fps": 8.0,
    "trajectory_palette": "voc",
    "map_encoding": "mode",
}


def stage_config(name: str, work: Path, steps: int | None = None):
    """configs/tiny/NAME.yaml with its base, data, output and init_from (the previous stage's
    output_dir, by its last folder name) moved under `work`."""
    from ..config import load_config

    sets = [f"base={work / 'base'}", f"output_dir={work / name}",
            f"data.dataset={work / 'data' / 'stages'}", f"data.precomputed={work / 'precomputed'}"]
    cfg_path = CONFIGS / f"{name}.yaml"
    prev = load_config(cfg_path, check=False).init_from
    if prev:
        sets.append(f"init_from={work / Path(prev).name}")
    if steps:
        sets.append(f"loop.max_steps={steps}")
    return load_config(cfg_path, sets)


def phase_stages(work: Path, names: list[str], steps: int | None = None, device: torch.device | str = "cpu") -> None:
    """Train each named stage (configs/tiny/NAME.yaml) on `device` unless its final weights exist."""
    from ..trainer import train

    for name in names:
        if (work / name / "final" / "controlnet" / "config.json").exists():
            continue
        t0 = time.time()
        with accelerate_device(torch.device(device)):
            train(stage_config(name, work, steps))
        log(f"{name} trained in {time.time() - t0:.0f} s")


def ship(work: Path, out: Path) -> None:
    """Copy the base and the three stages into the package, weights stored in fp16 (loaded as fp32), with
    the base's recommended settings (`TINY_SETTINGS`, base/magicmotion.json).

    The text encoder (48 KB) stays fp32: transformers loads a model in the dtype it was saved in, so
    an fp16 one would come back fp16 to anyone who loads the base by hand (diffusers models load fp32).
    """
    from diffusers import WanImageToVideoPipeline

    from ...models import SegmentHead, WanTrajectoryControlNet
    from ...pipelines.settings import write_settings_file

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = WanImageToVideoPipeline.from_pretrained(work / "base", dtype=torch.float32)
    pipe.transformer.half()
    pipe.save_pretrained(tmp / "base")
    write_settings_file(tmp / "base", TINY_SETTINGS, note=TINY_NOTE)
    for stage in STAGES:
        final = work / stage / "final"
        WanTrajectoryControlNet.from_pretrained(final / "controlnet").half().save_pretrained(
            tmp / stage / "controlnet")
        if (final / "segment_head" / "config.json").exists():
            SegmentHead.from_pretrained(final / "segment_head").half().save_pretrained(
                tmp / stage / "segment_head")
    card = Path(__file__).resolve().parents[4] / "docs" / "model-card-tiny.md"
    if card.is_file():
        shutil.copy(card, tmp / "README.md")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"shipped to {out} ({size / 2**20:.1f} MiB)")


def phase_examples(work: Path, examples: Path, clip_index: int = 3) -> None:
    """The bundled example: first frame, prompt and the three trajectory kinds of a held-out clip."""
    from ... import trajectory
    from ...data.reader import Dataset
    from ...io import write_image

    ds = Dataset(work / "data" / "heldout", num_frames=FRAMES, sampling="start")
    clip = ds[clip_index]
    examples.mkdir(parents=True, exist_ok=True)
    write_image(examples / "first_frame.png", clip.frames[0])
    (examples / "prompt.txt").write_text(clip.caption + "\n")
    dense = clip.trajectory
    trajectory.save(dense, examples / "trajectory-mask.json")
    boxes = dense.copy()
    for o in boxes.objects:
        o.masks = {0: o.masks[0]} if 0 in o.masks else {}
    trajectory.save(boxes, examples / "trajectory-box.json")
    trajectory.save(trajectory.sparsify(dense, num_keys=3, mode="even"), examples / "trajectory-sparse.json")
    # what a user writes by hand: boxes on key frames 0, 8, 16 and a frame-0 mask PNG per object
    hand = trajectory.sparsify(dense, num_keys=2, mode="even")
    (examples / "masks").mkdir(exist_ok=True)
    data = trajectory.to_dict(hand)
    for o, od in zip(hand.objects, data["objects"]):
        name = f"masks/object{o.id}_0.png"
        write_image(examples / name, o.mask(0).astype(np.uint8) * 255)
        od["masks"] = {"0": name}
    (examples / "trajectory.json").write_text(json.dumps(data, indent=1) + "\n")
    from ...io import write_video
    write_video(examples / "source.mp4", clip.frames)
