"""Make the pictures of docs/trajectory-format.md, "Getting a trajectory", from the real samples
(../shared/data/real-samples): `python docs/trajectory-sources/make_pictures.py`."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from magicmotion.io import overlay, read_image, read_video, write_image
from magicmotion.trajectory import (from_label_masks, from_mask_frames, interpolate_boxes, load, masks_to_boxes,
                                    render)
from magicmotion.trajectory.from_video import fit_motion
from magicmotion.trajectory.tracks import PointTracks, TrackedObject, tracks_to_trajectory

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / ".." / "shared" / "data" / "real-samples"
OUT = Path(__file__).resolve().parent
FRAMES = [0, 5, 8, 13]
WIDTH = 300  # of each frame in a picture


def row(frames: np.ndarray, maps: np.ndarray, picks, dots=None) -> np.ndarray:
    """The maps over the frames at `picks`, side by side, each WIDTH wide, frame numbers written on."""
    tiles = []
    for t in picks:
        tile = overlay(frames[t][None], maps[t][None], 0.55)[0].copy()
        for x, y in (dots or {}).get(t, []):
            cv2.circle(tile, (int(x), int(y)), 2, (255, 255, 0), -1)
        h, w = tile.shape[:2]
        tile = cv2.resize(tile, (WIDTH, round(h * WIDTH / w)), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, f"frame {t}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def main() -> None:
    judo_frames = read_video(REAL / "images" / "judo")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 00005.png is a pixel narrower
        judo = from_mask_frames(REAL / "masks" / "judo", num_frames=16, fill="none")
        bike = from_mask_frames(REAL / "masks" / "bike", fill="none")
    # 1. masks (from-masks; from-video writes the same kind, a mask on every frame)
    maps = render(interpolate_boxes(masks_to_boxes(judo)), "sparse_box")
    for t in FRAMES:  # show each annotated frame's masks filled
        labels = sum(o.id * o.mask(t) for o in judo.objects)
        maps[t] = render(from_label_masks(np.stack([labels])), "mask")[0]
    write_image(OUT / "from-masks.png", row(judo_frames, maps, FRAMES))
    # 2. motion transfer: everyone annotated in judo as one moving object, placed on the bike's first frame
    labels = np.stack([np.any([o.mask(t) for o in judo.objects], axis=0) for t in FRAMES]).astype(np.int64)
    people = from_label_masks(labels, frames=FRAMES, num_frames=16)
    bike_frame = read_image(REAL / "images" / "bike" / "00000.jpg")
    rider = [300, 40, 520, 470]  # a box drawn around the rider
    fitted = fit_motion(people, (bike_frame.shape[1], bike_frame.shape[0]), [rider])
    maps = np.zeros((16, *bike_frame.shape), dtype=np.uint8)
    for t in FRAMES:  # the warped masks
        maps[t] = render(from_label_masks(fitted.objects[0].mask(t)[None].astype(np.int64)), "mask")[0]
    write_image(OUT / "fit-to.png", row(np.repeat(bike_frame[None], 16, axis=0), maps, FRAMES))
    # 3. point tracks: points on a grid inside the true masks (dots) -> boxes
    objects, dots = [], {}
    for o in judo.objects:
        per = []
        for t in sorted(o.masks):
            ys, xs = np.nonzero(o.mask(t)[4::8, 4::8])
            per.append((t, np.stack([xs, ys], 1) * 8 + 4.5))
        n = max(len(p) for _, p in per)
        pts = np.full((16, n, 2), np.nan)
        for t, p in per:
            pts[t, :len(p)] = p
            dots.setdefault(t, []).extend(p.tolist())
        objects.append(TrackedObject(o.id, pts, np.isfinite(pts).all(-1)))
    traj = tracks_to_trajectory(PointTracks(854, 480, 16, objects))
    maps = render(traj, "sparse_box")
    maps[0] = 0
    from magicmotion.trajectory import draw_box, palette_color

    for o in traj.objects:  # frame 0 too as an outline, to show the box around the dots
        if 0 in o.boxes:
            draw_box(maps[0], o.boxes[0], palette_color(o.id), 4)
    write_image(OUT / "from-points.png", row(judo_frames, maps, FRAMES, dots))
    # 4. drawn in the app (the bundled example's spec)
    spec = load(ROOT / "examples" / "trajectory.json")
    first = read_image(ROOT / "examples" / "first_frame.png")
    picks = [0, spec.num_frames // 3, 2 * spec.num_frames // 3, spec.num_frames - 1]
    write_image(OUT / "drawn.png", row(np.repeat(first[None], spec.num_frames, axis=0), render(spec, "box"), picks))


if __name__ == "__main__":
    main()
