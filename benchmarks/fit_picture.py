"""docs/fit.png: what `generate --fit crop|pad|stretch` does to a picture whose aspect ratio is not the
output's. A real 854x480 photo (a frame of the judo clip in the shared real samples) and a box moving
right, generated with the shipped tiny model at --size 64x64 once per fit; one labelled row per fit
(magicmotion.sheet): the first frame as the model sees it, the trajectory over it, generated frames.

    python benchmarks/fit_picture.py [--out docs/fit.png] [--steps 25]

The same as running `magicmotion generate --size 64x64 --fit FIT` three times. The tiny model knows only
its synthetic world, so the generated frames are blobs; the picture is about the first two columns.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / ".." / "shared" / "data" / "real-samples" / "images" / "judo" / "00000.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "fit.png"))
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()

    from magicmotion.io import read_image
    from magicmotion.logfilters import quiet_loading
    from magicmotion.pipelines import generate, load_pipeline
    from magicmotion.pipelines.conditions import prepare_conditions
    from magicmotion.pipelines.settings import FITS
    from magicmotion.sheet import SheetRow, write_results_sheet
    from magicmotion.trajectory import ObjectTrack, Trajectory

    quiet_loading()
    photo = read_image(PHOTO)
    h, w = photo.shape[:2]
    traj = Trajectory(w, h, 17, [ObjectTrack(1, "person", boxes={0: np.array([0.30 * w, 0.25 * h, 0.55 * w, 0.95 * h]),
                                                                   16: np.array([0.60 * w, 0.25 * h, 0.85 * w, 0.95 * h])})])
    pipe = load_pipeline(base=None, kind="box")
    rows = []
    for fit, resize in FITS.items():
        pipe.model_settings = pipe.model_settings.with_arguments(resize=resize)
        frames, maps = generate(pipe, photo, "people doing judo", traj, "box", height=64, width=64,
                                num_inference_steps=args.steps, seed=0)
        seen = prepare_conditions(photo, traj, "box", (64, 64), resize=resize).image  # the model's first frame
        rows.append(SheetRow(f"--fit {fit}", seen, maps, frames))
    print(write_results_sheet(args.out, rows, columns=4))


if __name__ == "__main__":
    main()
