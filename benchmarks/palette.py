"""How well the two palettes ("voc", "release") keep objects apart: should new training move to
the release palette?

    .venv/bin/python benchmarks/palette.py [--seeds 3]

Prints, per palette:
1. colour separation of object ids 1..8: the smallest RGB distance between two of them (and to
   black), as drawn and after an H.264 round trip (the project's writer, crf 18, yuv420p) of large
   filled patches (patch centres) and of 4 px box outlines (band centres, where chroma subsampling
   bites); and the share of outline pixels whose nearest colour (ids 1..8 and black) is another id;
2. decoding accuracy of `from_maps` through H.264: 720x480, 49 frames, 5 synthetic objects, `mask`
   and `box` maps: objects found, mask IoU (mask: every frame; box: frame 0) and box IoU, min and
   mean over objects and frames, over `--seeds` clips.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from magicmotion.data.synthetic import SyntheticWorld
from magicmotion.errors import TrajectoryError
from magicmotion.io import read_video, write_video
from magicmotion.trajectory import (PALETTES, Trajectory, draw_box, from_label_masks, from_maps,
                                    get_palette, palette_index)

IDS = range(1, 9)


def min_distance(colours: np.ndarray) -> tuple[float, float]:
    """(smallest distance between two colours, smallest distance of a colour to black)."""
    c = colours.astype(float)
    pairs = min(np.linalg.norm(a - b) for a, b in itertools.combinations(c, 2))
    return float(pairs), float(np.linalg.norm(c, axis=1).min())


def h264(frames: np.ndarray, folder: Path) -> np.ndarray:
    write_video(folder / "x.mp4", frames)
    return read_video(folder / "x.mp4")[0]


def separation(palette: str, folder: Path) -> dict:
    table = get_palette(palette)
    colours = table[[palette_index(i) for i in IDS]]
    # large patches: 8 squares of 80 px on a black 720x480 frame (2 frames: the codec needs a few)
    patches = np.zeros((2, 480, 720, 3), np.uint8)
    outlines = np.zeros((2, 480, 720, 3), np.uint8)
    centres, bands = [], []
    for k, colour in enumerate(colours):
        x, y = 40 + (k % 4) * 170, 60 + (k // 4) * 210
        patches[:, y:y + 80, x:x + 80] = colour
        centres.append((y + 40, x + 40))
        for t in range(2):
            draw_box(outlines[t], [x, y, x + 120, y + 140], colour, 4, style=palette)
        bands.append((y + 70, x + (2 if palette == "voc" else 0)))  # left band, middle row
    back = h264(patches, folder)[1]
    patch_colours = np.array([back[cy - 10:cy + 10, cx - 10:cx + 10].reshape(-1, 3).mean(0)
                              for cy, cx in centres])
    back_outlines = h264(outlines, folder)[1]
    band_colours = np.array([back_outlines[cy - 20:cy + 20, cx].mean(0) for cy, cx in bands])
    # nearest colour of every outline pixel, among black and ids 1..8
    lit = outlines[1].any(axis=2)
    truth = np.zeros(outlines.shape[1:3], np.int64)
    for k, colour in enumerate(colours):
        truth[(outlines[1] == colour).all(axis=2)] = k + 1
    candidates = np.concatenate([np.zeros((1, 3)), colours]).astype(float)
    d = ((back_outlines[lit].astype(float)[:, None] - candidates[None]) ** 2).sum(-1)
    wrong = (d.argmin(1) != truth[lit]) & (d.argmin(1) != 0)
    return {
        "drawn": min_distance(colours),
        "patches": min_distance(patch_colours),
        "outlines": min_distance(band_colours),
        "outline_wrong_id": float(wrong.mean()),
    }


def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def decode_accuracy(palette: str, seeds: int, folder: Path) -> dict:
    from magicmotion.trajectory import render

    world = SyntheticWorld(size=(720, 480), num_frames=49, min_objects=5, max_objects=5)
    out = {}
    for kind in ("mask", "box"):
        mask_ious, box_ious, found, seconds = [], [], 0, 0.0
        for seed in range(seeds):
            _, labels, _, _ = world.sample(np.random.default_rng([seed, 7]))
            truth = from_label_masks(labels)
            back_maps = h264(render(truth, kind, palette=palette), folder)
            start = time.process_time()
            try:
                back = from_maps(back_maps)
            except TrajectoryError as e:  # counted as nothing recovered
                print(f"  {palette} {kind} clip {seed}: {e}")
                back = Trajectory(width=720, height=480, num_frames=49)
            seconds += time.process_time() - start
            found += back.ids == truth.ids
            for o in truth.objects:
                if o.id not in back.ids:
                    mask_ious.append(0.0)
                    continue
                b = back.object(o.id)
                for t in (range(truth.num_frames) if kind == "mask" else [0]):
                    m, mb = o.mask(t), b.mask(t)
                    if m.any():
                        mask_ious.append((m & mb).sum() / (m | mb).sum() if mb is not None else 0.0)
                if kind == "box":
                    for t in range(1, truth.num_frames):
                        if o.mask_area(t):
                            box_ious.append(box_iou(o.boxes[t], b.boxes[t]) if t in b.boxes else 0.0)
        out[kind] = {"ids_right": f"{found}/{seeds}", "mask_iou": (min(mask_ious), np.mean(mask_ious)),
                     "box_iou": (min(box_ious), np.mean(box_ious)) if box_ious else None,
                     "cpu_s": seconds / seeds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="synthetic clips per palette and kind (3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("colour separation of ids 1..8 (RGB distance: closest pair / closest to black)")
        for palette in PALETTES:
            s = separation(palette, folder)
            print(f"  {palette:8s} drawn {s['drawn'][0]:5.1f} / {s['drawn'][1]:5.1f}   after H.264: "
                  f"patches {s['patches'][0]:5.1f} / {s['patches'][1]:5.1f}, 4 px outlines "
                  f"{s['outlines'][0]:5.1f} / {s['outlines'][1]:5.1f}, outline pixels nearest another id "
                  f"{100 * s['outline_wrong_id']:.1f}%")
        print(f"from_maps through H.264: 720x480, 49 frames, 5 objects, {args.seeds} clips")
        for palette in PALETTES:
            for kind, r in decode_accuracy(palette, args.seeds, folder).items():
                boxes = (f", box IoU min {r['box_iou'][0]:.3f} mean {r['box_iou'][1]:.3f}"
                         if r["box_iou"] else "")
                print(f"  {palette:8s} {kind:5s} ids right {r['ids_right']}, mask IoU min "
                      f"{r['mask_iou'][0]:.3f} mean {r['mask_iou'][1]:.3f}{boxes}, {r['cpu_s']:.1f} s CPU")


if __name__ == "__main__":
    main()
