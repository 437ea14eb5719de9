"""Make the bundled example: a 64x64 first frame and a trajectory spec for 17 frames with two
objects (a frame-0 mask each, as a PNG, and key boxes on frames 0, 8 and 16).

    .venv/bin/python examples/make_example.py        # writes examples/first_frame.png,
                                                     # examples/trajectory.json, examples/masks/

Try it: magicmotion trajectory preview examples/trajectory.json --image examples/first_frame.png \
            --out preview.gif
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from magicmotion.io import atomic_path, write_image
from magicmotion.trajectory import load
from magicmotion.trajectory.spec import dumps

HERE = Path(__file__).resolve().parent
SIZE, FRAMES = 64, 17


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first frame (64, 64, 3) uint8 and the two objects' masks: a red ball, a blue block."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[...] = (70 + yy // 2)[..., None] * np.array([1, 1, 1.2])  # a sky-like vertical gradient
    image[48:] = (90, 120, 60)  # grass
    ball = (xx - 14) ** 2 + (yy - 40) ** 2 <= 7 ** 2
    block = (xx >= 40) & (xx < 54) & (yy >= 30) & (yy < 48)
    image[ball] = (220, 40, 40)
    image[block] = (40, 70, 200)
    return image, ball, block


def box_of(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def main() -> None:
    image, ball, block = scene()
    (HERE / "masks").mkdir(exist_ok=True)
    write_image(HERE / "first_frame.png", image)
    for name, mask in (("ball_0.png", ball), ("block_0.png", block)):
        with atomic_path(HERE / "masks" / name) as tmp:
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
    spec = {
        "version": 1, "width": SIZE, "height": SIZE, "num_frames": FRAMES,
        "caption": "a red ball rolls to the right while a blue block rises",
        "objects": [
            {"id": 1, "label": "ball",
             "boxes": {"0": box_of(ball), "8": [20, 33, 35, 48], "16": [40, 33, 55, 48]},
             "masks": {"0": "masks/ball_0.png"}},
            {"id": 2, "label": "block",
             "boxes": {"0": box_of(block), "8": [40, 20, 54, 38], "16": [38, 6, 56, 26]},
             "masks": {"0": "masks/block_0.png"}},
        ],
    }
    with atomic_path(HERE / "trajectory.json") as tmp:
        tmp.write_text(dumps(spec))
    load(HERE / "trajectory.json")  # check it
    print(f"wrote {HERE / 'first_frame.png'}, {HERE / 'trajectory.json'}, {HERE / 'masks'}/")


if __name__ == "__main__":
    main()
