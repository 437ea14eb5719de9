"""Named palettes ("voc", "release") and the release's box outlines (cv2.rectangle)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import disk

from magicmotion.cli import main
from magicmotion.errors import TrajectoryError
from magicmotion.io import read_video
from magicmotion.trajectory import (PALETTE, PALETTES, ObjectTrack, Trajectory, box_thickness, draw_box,
                                    encode_mask, get_palette, palette_color, palette_ids, preview_frames,
                                    render, save)

# measured on the release's demo map videos (after H.264)
MEASURED = {1: (127, 32, 32), 2: (127, 80, 80), 3: (127, 59, 25)}


def test_palette_names_and_tables():
    assert PALETTES == ("voc", "release")
    for name in PALETTES:
        table = get_palette(name)
        assert table.shape == (256, 3) and table.dtype == np.uint8
        assert tuple(table[0]) == (0, 0, 0)
        assert not (table[1:] == 0).all(axis=1).any()  # black is never an object colour
    assert get_palette("voc") is PALETTE
    assert palette_color(1) == (128, 0, 0) == palette_color(1, "voc")  # the default stays voc
    with pytest.raises(TrajectoryError, match="unknown palette 'davis'.*voc, release"):
        get_palette("davis")


@pytest.mark.parametrize("object_id", [1, 2, 3])
def test_release_colours_match_the_measured_demo_videos(object_id):
    colour = np.array(palette_color(object_id, "release"))
    assert np.abs(colour - MEASURED[object_id]).max() <= 2  # H.264 moves a flat colour a level or two: 1 here


def test_release_palette_is_supervision_default_at_half_over_black():
    # "#A351FB" is supervision's colour 0: by_idx(21) wraps to it; halves round as cv2.addWeighted does
    assert palette_color(1, "release") == (128, 32, 32)  # FF4040: 127.5 -> 128
    assert palette_color(3, "release") == (128, 59, 26)  # FF7633
    assert palette_color(21, "release") == (82, 40, 126)  # A351FB
    assert palette_color(22, "release") == palette_color(1, "release")
    full = np.array([[[0xFF, 0x76, 0x33]]], np.uint8)
    assert tuple(cv2.addWeighted(full, 0.5, np.zeros_like(full), 0.5, 0)[0, 0]) == palette_color(3, "release")
    ids = palette_ids("release")
    assert len(ids) == 21 and sorted(ids.values()) == list(range(1, 22))
    assert len(palette_ids("voc")) == 255


def test_release_box_is_cv2_rectangle_band():
    frame = np.zeros((60, 60, 3), np.uint8)
    draw_box(frame, [10, 12, 40, 45], (128, 32, 32), 4, style="release")
    expected = np.zeros_like(frame)
    cv2.rectangle(expected, (10, 12), (40, 45), (128, 32, 32), 4)
    np.testing.assert_array_equal(frame, expected)
    lit = frame.any(axis=2)
    # a band 5 px wide centred on each edge: columns 8..12 and 38..42 on a middle row
    assert np.flatnonzero(lit[30]).tolist() == [8, 9, 10, 11, 12, 38, 39, 40, 41, 42]
    assert np.flatnonzero(lit[:, 25]).tolist() == [10, 11, 12, 13, 14, 43, 44, 45, 46, 47]
    assert not lit[10, 8]  # rounded outer corner
    # thickness 1: the line runs on the exclusive edge, one pixel past the box's last column / row
    thin = np.zeros((60, 60, 3), np.uint8)
    draw_box(thin, [10, 12, 40, 45], (128, 32, 32), 1, style="release")
    assert np.flatnonzero(thin[30].any(axis=1)).tolist() == [10, 40]
    assert np.flatnonzero(thin[:, 25].any(axis=1)).tolist() == [12, 45]
    # ours (voc) stays inside the box
    ours = np.zeros((60, 60, 3), np.uint8)
    draw_box(ours, [10, 12, 40, 45], (128, 0, 0), 1)
    assert np.flatnonzero(ours[30].any(axis=1)).tolist() == [10, 39]


def _two_objects() -> Trajectory:
    h, w = 120, 180
    a, b = ObjectTrack(id=1), ObjectTrack(id=2)
    a.masks[0] = encode_mask(disk(h, w, 40, 50, 15))
    a.boxes = {0: np.array([25.0, 35, 56, 66]), 4: np.array([100.0, 30, 140, 80])}
    b.masks[0] = encode_mask(disk(h, w, 130, 80, 10))
    b.boxes = {0: np.array([120.0, 70, 141, 91]), 2: np.array([20.0, 60, 60, 100])}
    return Trajectory(width=w, height=h, num_frames=5, objects=[a, b])


def test_render_release_draws_like_the_release():
    traj = _two_objects()
    maps = render(traj, "sparse_box", palette="release")
    c1, c2 = palette_color(1, "release"), palette_color(2, "release")
    # frame 0: filled masks in the release colours
    assert (maps[0][disk(120, 180, 40, 50, 15)] == c1).all()
    assert (maps[0][disk(120, 180, 130, 80, 10)] == c2).all()
    # key frames: cv2.rectangle with the same thickness; other frames black
    t = box_thickness(180, 120)
    expected = np.zeros((120, 180, 3), np.uint8)
    cv2.rectangle(expected, (100, 30), (140, 80), c1, t)
    np.testing.assert_array_equal(maps[4], expected)
    expected = np.zeros((120, 180, 3), np.uint8)
    cv2.rectangle(expected, (20, 60), (60, 100), c2, t)
    np.testing.assert_array_equal(maps[2], expected)
    assert not maps[1].any() and not maps[3].any()
    # box: every frame outlined, interpolated as for voc
    box = render(traj, "box", palette="release")
    np.testing.assert_array_equal(box[0], maps[0])
    assert box[1:].any(axis=(1, 2, 3)).all()


def test_voc_is_the_default_and_unchanged():
    traj = _two_objects()
    for kind in ("box", "sparse_box"):
        np.testing.assert_array_equal(render(traj, kind), render(traj, kind, palette="voc"))
    assert set(map(tuple, render(traj, "box").reshape(-1, 3))) <= {(0, 0, 0), (128, 0, 0), (0, 128, 0)}


def test_preview_frames_palette():
    traj = _two_objects()
    image = np.full((120, 180, 3), 90, np.uint8)
    _, maps = preview_frames(traj, image, kind="box", palette="release")
    np.testing.assert_array_equal(maps, render(traj, "box", palette="release"))


def test_cli_render_and_preview_palette(tmp_path, capsys):
    spec = save(_two_objects(), tmp_path / "spec.json")
    assert main(["trajectory", "render", str(spec), "--kind", "box", "--palette", "release",
                 "--out", str(tmp_path / "maps") + "/"]) == 0
    frames, _ = read_video(tmp_path / "maps")
    np.testing.assert_array_equal(frames, render(_two_objects(), "box", palette="release"))
    assert "palette release" in capsys.readouterr().out
    image = tmp_path / "first.png"
    cv2.imwrite(str(image), np.full((120, 180, 3), 90, np.uint8))
    assert main(["trajectory", "preview", str(spec), "--image", str(image), "--palette", "release",
                 "--out", str(tmp_path / "p.png")]) == 0
    with pytest.raises(SystemExit) as e:
        main(["trajectory", "render", str(spec), "--palette", "davis", "--out", str(tmp_path / "x.mp4")])
    assert e.value.code == 2
