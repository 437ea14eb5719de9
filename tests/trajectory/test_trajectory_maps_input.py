"""`trajectory render` and `trajectory preview` take rendered maps as well as specs (read back with
`from_maps`), and draw in the palette of the model named with --controlnet."""

from __future__ import annotations

import numpy as np

from magicmotion.cli import main
from magicmotion.io import read_image, read_video, write_image, write_video
from magicmotion.trajectory import from_dict, get_palette, render, save
from magicmotion.trajectory.decode import from_maps


def two_boxes(w=720, h=480, frames=9):
    objects = [{"id": i, "boxes": {str(t): [x * w + w / 90 * t, y * h, x * w + w / 90 * t + 0.2 * w, (y + 0.3) * h]
                                   for t in range(frames)}}
               for i, (x, y) in ((1, (0.1, 0.2)), (2, (0.5, 0.5)))]
    return from_dict({"version": 1, "width": w, "height": h, "num_frames": frames, "objects": objects})


def box_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_preview_of_a_map_video_shows_its_boxes(tmp_path):
    spec = two_boxes()
    write_video(tmp_path / "maps.mp4", render(spec, "box", palette="release"), fps=8)
    image = np.full((480, 720, 3), 90, np.uint8)
    write_image(tmp_path / "first.png", image)
    assert main(["trajectory", "preview", str(tmp_path / "maps.mp4"), "--image", str(tmp_path / "first.png"),
                 "--out", str(tmp_path / "p.mp4")]) == 0
    frames, _ = read_video(tmp_path / "p.mp4")
    changed = np.abs(frames[4].astype(int) - 90).max(axis=2) > 20
    x0, y0, x1, y1 = (int(v) for v in spec.objects[0].boxes[4])
    assert changed[y0 + 2, x0 + 20:x1 - 20].mean() > 0.9  # the top edge of box 1 on frame 4 (measured 1.0)
    assert not changed[y0 + 20:y1 - 20, x0 + 20:x1 - 20].any()  # its inside left alone


def test_render_of_a_map_video_in_another_palette_and_size(tmp_path):
    spec = two_boxes()
    write_video(tmp_path / "maps.mp4", render(spec, "box", palette="release"), fps=8)
    assert main(["trajectory", "render", str(tmp_path / "maps.mp4"), "--palette", "voc", "--size", "360x240",
                 "--out", f"{tmp_path / 'small'}/"]) == 0
    frames = np.stack([read_image(p) for p in sorted((tmp_path / "small").glob("*.png"))])
    back = from_maps(frames, palette="voc")
    for o, want in zip(back.objects, spec.objects):
        for t in range(1, 9):
            assert box_iou(o.boxes[t], [v / 2 for v in want.boxes[t]]) > 0.9  # half size: measured 1.0


def test_palette_comes_from_the_controlnet(tmp_path):
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines.loading import TINY_MODEL_DIR

    cn = WanTrajectoryControlNet.from_pretrained(TINY_MODEL_DIR / "stage2" / "controlnet")
    cn.register_to_config(trajectory_palette="release")
    cn.save_pretrained(tmp_path / "cn")
    spec = two_boxes(96, 64, 5)
    save(spec, tmp_path / "spec.json")
    for flags, palette in (([], "voc"), (["--controlnet", str(tmp_path / "cn")], "release")):
        out = tmp_path / palette
        assert main(["trajectory", "render", str(tmp_path / "spec.json"), "--out", f"{out}/", *flags]) == 0
        first = read_image(sorted(out.glob("*.png"))[0])
        assert tuple(first[20, 20]) == tuple(get_palette(palette)[1])
