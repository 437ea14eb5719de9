"""Speed of `magicmotion data import-magicdata`: clips per second with one process and with Ray
(2 workers), side by side, on a replica of the MagicData layout made from synthetic clips (videos,
mask maps and box maps as PNGs in the release's colours, MagicData.csv).

    python benchmarks/import.py [--clips 40] [--frames 17] [--size 64x64] [--workers 2]
                                [--precompute]

Each import reads every video (to count its frames), decodes both map folders and writes a link, an
annotation and an index line. `--precompute` also times `magicmotion train precompute` with the tiny
base (configs/tiny/stage1.yaml) on the imported clips and reports seconds and bytes per clip, the
figures docs/training.md scales to real clips.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from magicmotion.data.cli import parse_size
from magicmotion.data.magicdata import import_magicdata
from magicmotion.data.synthetic import SyntheticWorld, caption_for
from magicmotion.io import write_image, write_video
from magicmotion.trajectory import (box_thickness, draw_box, from_label_masks, palette_color,
                                    render)


def write_replica(root: Path, clips: int, frames: int, size: tuple[int, int], seed: int = 0) -> None:
    """A MagicData-like folder of `clips` synthetic clips."""
    world = SyntheticWorld(size=size, num_frames=frames, pan_prob=0.0)
    (root / "videos").mkdir(parents=True)
    rows = []
    for k in range(clips):
        scene = world.sample_scene(np.random.default_rng([seed, k]))
        video, labels = world.render(scene)
        traj = from_label_masks(labels)
        vid = f"{k:06d}"
        write_video(root / "videos" / f"{vid}.mp4", video, fps=8.0)
        masks = render(traj, "mask", palette="release")
        boxes = np.zeros_like(masks)
        thickness = box_thickness(*size)
        for t in range(frames):
            for o in traj.objects:
                if t in o.boxes:
                    draw_box(boxes[t], o.boxes[t], palette_color(o.id, "release"), thickness,
                             style="release")
        for name, maps in (("masks", masks), ("boxs", boxes)):
            folder = root / name / vid
            folder.mkdir(parents=True)
            for t, m in enumerate(maps):
                write_image(folder / f"annotated_frame_{t:05d}.png", m)
        rows.append((vid, caption_for(scene)))
    with open(root / "MagicData.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("video_id", "caption"))
        w.writerows(rows)


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=parse_size, default=(64, 64))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precompute", action="store_true",
                        help="also time `train precompute` (tiny base) on the imported clips")
    args = parser.parse_args()
    w, h = args.size
    print(f"MagicData replica: {args.clips} clips x {args.frames} frames at {w}x{h}; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        write_replica(tmp / "magicdata", args.clips, args.frames, args.size)
        print(f"replica written in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        local = import_magicdata(tmp / "magicdata", tmp / "local", progress=False)
        t_local = time.perf_counter() - start

        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter()
        on_ray = import_magicdata(tmp / "magicdata", tmp / "ray", engine="ray", progress=False)
        t_ray = time.perf_counter() - start
        # a second Ray run on a warm cluster: without the worker start-up
        start = time.perf_counter()
        import_magicdata(tmp / "magicdata", tmp / "ray2", engine="ray", progress=False)
        t_ray2 = time.perf_counter() - start
        ray.shutdown()
        same = all((tmp / "local" / n).read_bytes() == (tmp / "ray" / n).read_bytes()
                   for n in ("index.jsonl", "import.json"))
        print(f"{'engine':<24}{'seconds':>9}{'clips/s':>10}")
        print(f"{'one process':<24}{t_local:9.2f}{local.imported / t_local:10.2f}")
        print(f"{f'ray, {args.workers} workers (cold)':<24}{t_ray:9.2f}{on_ray.imported / t_ray:10.2f}")
        print(f"{f'ray, {args.workers} workers (warm)':<24}{t_ray2:9.2f}{on_ray.imported / t_ray2:10.2f}")
        print(f"same dataset byte for byte: {same}")

        if args.precompute:
            from magicmotion.cli import main as cli

            out = tmp / "latents"
            start = time.perf_counter()
            cli(["train", "precompute", "--config", "configs/tiny/stage1.yaml", "--out", str(out),
                 "--no-progress", "--set", f"data.dataset={tmp / 'local'}",
                 "--set", f"data.num_frames={args.frames}", "--set", f"data.size=[{w}, {h}]"])
            t_pre = time.perf_counter() - start
            n = len(list((out / "clips").glob("*.safetensors")))
            print(f"precompute (tiny base, 3 kinds): {n} clips in {t_pre:.1f} s = "
                  f"{t_pre / max(n, 1):.2f} s/clip, {_du(out) / max(n, 1) / 1e6:.3f} MB/clip")


if __name__ == "__main__":
    main()
