"""Real DAVIS-style annotations (the Cutie examples in ../shared/data/real-samples): a sparse
annotation where frames 0, 5, 8 and 13 each introduce a new object, one mask a pixel narrower than
the others."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from magicmotion.errors import TrajectoryError
from magicmotion.io import read_image
from magicmotion.trajectory import from_mask_frames, palette_color, preview_frames, render, sparsify

INTRODUCED = {1: 0, 2: 5, 3: 8, 4: 13}  # object id -> the frame whose PNG introduces it


def colours_in(maps: np.ndarray) -> set[tuple[int, int, int]]:
    """The distinct (r, g, b) colours in uint8 maps (..., 3)."""
    packed = maps.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    return {(int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255) for k in np.unique(packed)}


def label_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.array(im)


def test_judo_mask_folder(real_samples):
    folder = real_samples / "masks" / "judo"
    with pytest.warns(UserWarning, match=r"00005\.png: size 853x480 differs from the other masks' 854x480"):
        traj = from_mask_frames(folder, num_frames=16, fill="none")  # as annotated
    assert traj.ids == [1, 2, 3, 4]
    assert (traj.width, traj.height, traj.num_frames) == (854, 480, 16)
    for o in traj.objects:
        assert sorted(o.masks) == [0, 5, 8, 13]  # every annotated frame, empty where absent
        t = INTRODUCED[o.id]
        assert sorted(o.boxes) == [t]  # a box only where the object is annotated
        labels = label_png(folder / f"{t:05d}.png")
        ys, xs = np.nonzero(labels == o.id)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        if t != 5:  # read as they are
            np.testing.assert_array_equal(o.mask(t), labels == o.id)
            np.testing.assert_array_equal(o.boxes[t], box)
        else:  # the 853-wide PNG, resized to 854: within a pixel
            np.testing.assert_allclose(o.boxes[t], box, atol=1)
            assert abs(int(o.mask(t).sum()) - len(xs)) < 0.01 * len(xs)  # one column of 853: measured 0
        for other in {0, 5, 8, 13} - {t}:
            assert not o.mask(other).any()
    with pytest.warns(UserWarning):
        assert from_mask_frames(folder).num_frames == 14  # the last annotated frame + 1


def test_judo_renders_sparse_box_but_not_mask(real_samples):
    with pytest.warns(UserWarning):
        traj = from_mask_frames(real_samples / "masks" / "judo", num_frames=16, fill="none")
    with pytest.raises(TrajectoryError, match=r"judo: kind 'mask' needs a mask on every frame; "
                                              r"object 1 has none on frame 1 \(and 11 more\)"):
        render(traj, "mask")
    maps = render(traj, "sparse_box")
    assert maps.shape == (16, 480, 854, 3)
    drawn = [t for t in range(16) if maps[t].any()]
    assert drawn == [0, 5, 8, 13]
    np.testing.assert_array_equal(maps[0].any(axis=2), traj.object(1).mask(0))  # filled mask
    for oid, t in INTRODUCED.items():
        colours = colours_in(maps[t])
        assert colours == {(0, 0, 0), palette_color(oid)}
    sparse = sparsify(traj, num_keys=4)
    assert sorted(sparse.object(1).masks) == [0]
    frames, maps = preview_frames(traj, read_image(real_samples / "images" / "judo" / "00000.jpg"),
                                  kind="sparse_box", size=(720, 480))
    assert frames.shape == maps.shape == (16, 480, 720, 3)


def test_bike_first_frame_masks(real_samples):
    traj = from_mask_frames(real_samples / "masks" / "bike", num_frames=4, fill="none")
    assert traj.ids == [1, 2] and traj.num_frames == 4
    labels = label_png(real_samples / "masks" / "bike" / "00000.png")
    maps = render(traj, "box")
    for oid in (1, 2):
        assert (maps[0][labels == oid] == palette_color(oid)).all()
    assert not maps[0][labels == 0].any()
    # boxes held from frame 0 on later frames: an outline of each object's frame-0 box
    assert colours_in(maps[3]) == {(0, 0, 0), palette_color(1), palette_color(2)}
