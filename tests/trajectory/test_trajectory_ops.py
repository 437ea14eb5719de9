"""Conversions: masks -> boxes, interpolation, sparsifying, and rescaling together with the image."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import disk

from magicmotion.errors import TrajectoryError
from magicmotion.trajectory import (ObjectTrack, Trajectory, fit_transform, interpolate_boxes,
                                    mask_box, masks_to_boxes, rescale, resize_crop, sparsify)


def moving_disks(w=60, h=40, num_frames=9) -> Trajectory:
    traj = Trajectory(width=w, height=h, num_frames=num_frames)
    for i, oid in enumerate((1, 5)):
        o = ObjectTrack(id=oid)
        for t in range(num_frames):
            o.set_mask(t, disk(h, w, 8 + 4 * t + 10 * i, 10 + 15 * i, 3 + i))
        traj.objects.append(o)
    return traj


# ------------------------------------------------------------------------------- masks -> boxes


def test_masks_to_boxes():
    traj = moving_disks()
    traj.objects[0].boxes[2] = np.array([0, 0, 1, 1.0])  # replaced by the mask's box
    traj.objects[0].set_mask(4, np.zeros((40, 60), bool))  # absent on frame 4
    traj.objects[0].boxes[4] = np.array([0, 0, 1, 1.0])
    out = masks_to_boxes(traj)
    for o in out.objects:
        for t in range(9):
            expected = mask_box(o.mask(t))
            if expected is None:
                assert t not in o.boxes
            else:
                np.testing.assert_array_equal(o.boxes[t], expected)
    assert sorted(out.objects[0].boxes) == [0, 1, 2, 3, 5, 6, 7, 8]
    np.testing.assert_array_equal(traj.objects[0].boxes[2], [0, 0, 1, 1])  # input untouched


# ------------------------------------------------------------------------------- interpolation


def test_interpolate_boxes_linear_moves_and_resizes():
    traj = Trajectory(width=100, height=100, num_frames=11)
    traj.objects.append(ObjectTrack(id=1, boxes={2: np.array([10, 10, 20, 20.0]),
                                                  6: np.array([30, 50, 60, 90.0])}))
    out = interpolate_boxes(traj)
    o = out.object(1)
    assert sorted(o.boxes) == list(range(11))
    np.testing.assert_allclose(o.boxes[4], [20, 30, 40, 55])  # halfway: position and size
    np.testing.assert_allclose(o.boxes[3], [15, 20, 30, 37.5])
    np.testing.assert_allclose(o.boxes[0], [10, 10, 20, 20])  # held before the first key
    np.testing.assert_allclose(o.boxes[10], [30, 50, 60, 90])  # and after the last
    assert sorted(traj.object(1).boxes) == [2, 6]  # input untouched


def test_interpolate_skips_absent_frames_and_objects_without_boxes():
    traj = Trajectory(width=50, height=50, num_frames=5)
    a = ObjectTrack(id=1, boxes={0: np.array([0, 0, 10, 10.0]), 4: np.array([40, 40, 50, 50.0])})
    a.set_mask(2, np.zeros((50, 50), bool))  # explicitly absent on frame 2
    b = ObjectTrack(id=2)
    traj.objects = [a, b]
    out = interpolate_boxes(traj)
    assert sorted(out.object(1).boxes) == [0, 1, 3, 4]
    np.testing.assert_allclose(out.object(1).boxes[3], [30, 30, 40, 40])
    assert out.object(2).boxes == {}


# ---------------------------------------------------------------------------------- sparsify


def test_sparsify_even():
    traj = masks_to_boxes(moving_disks(num_frames=49, w=300))
    dense = interpolate_boxes(traj)
    out = sparsify(traj, num_keys=3)
    for o, d in zip(out.objects, dense.objects):
        assert sorted(o.boxes) == [0, 16, 32, 48]
        assert sorted(o.masks) == [0]  # frame-0 mask kept, the others dropped
        for t in o.boxes:
            np.testing.assert_array_equal(o.boxes[t], d.boxes[t])
    assert sorted(sparsify(traj, num_keys=9).objects[0].boxes) == [0, 5, 11, 16, 21, 27, 32, 37, 43, 48]
    assert sorted(sparsify(traj, num_keys=1).objects[0].boxes) == [0, 48]


def test_sparsify_random_is_seeded():
    traj = masks_to_boxes(moving_disks(num_frames=49, w=300))
    a = sparsify(traj, num_keys=5, mode="random", seed=3)
    b = sparsify(traj, num_keys=5, mode="random", seed=3)
    keys = sorted(a.objects[0].boxes)
    assert keys == sorted(b.objects[0].boxes)
    assert keys[0] == 0 and len(keys) == 6 and all(1 <= t <= 48 for t in keys[1:])
    assert sorted(a.objects[1].boxes) == keys  # the same key frames for every object
    others = {tuple(sorted(sparsify(traj, num_keys=5, mode="random", seed=s).objects[0].boxes))
              for s in range(10)}
    assert len(others) > 1
    counts = {len(sparsify(traj, seed=s).objects[0].boxes) - 1 for s in range(40)}
    assert counts <= set(range(1, 10)) and len(counts) > 3  # random 1..9 keys when not given


def test_sparsify_from_key_boxes_short_video():
    traj = Trajectory(width=50, height=50, num_frames=3)
    traj.objects.append(ObjectTrack(id=1, boxes={0: np.array([0, 0, 10, 10.0]),
                                                  2: np.array([20, 20, 30, 30.0])}))
    out = sparsify(traj, num_keys=9)  # at most T - 1 other keys
    assert sorted(out.object(1).boxes) == [0, 1, 2]
    np.testing.assert_allclose(out.object(1).boxes[1], [10, 10, 20, 20])


@pytest.mark.parametrize("kwargs, message", [
    ({"num_keys": 0}, "num_keys must be 1..9"),
    ({"num_keys": 10}, "num_keys must be 1..9"),
    ({"max_keys": 12}, "max_keys must be 1..9"),
    ({"num_keys": 2, "mode": "sideways"}, "unknown sparsify mode"),
])
def test_sparsify_bad_arguments(kwargs, message):
    with pytest.raises(TrajectoryError, match=message):
        sparsify(moving_disks(), **kwargs)


# ---------------------------------------------------------------------------------- geometry


def test_fit_transform():
    assert fit_transform((854, 480), (720, 480)) == (1.0, 67.0, 0.0)
    scale, ox, oy = fit_transform((100, 100), (200, 50))
    assert (scale, ox, oy) == (2.0, 0.0, 75.0)


@pytest.mark.parametrize("src, dst", [((854, 480), (720, 480)), ((64, 64), (72, 48)),
                                      ((90, 60), (45, 30)), ((40, 30), (100, 120)),
                                      ((97, 61), (64, 64))])
def test_rescale_stays_aligned_with_the_image(src, dst):
    (sw, sh), (dw, dh) = src, dst
    mask = np.zeros((sh, sw), bool)
    x0, y0, x1, y1 = int(sw * 0.3), int(sh * 0.35), int(sw * 0.6), int(sh * 0.8)
    mask[y0:y1, x0:x1] = True
    image = np.zeros((sh, sw, 3), np.uint8)
    image[mask] = 255
    traj = Trajectory(width=sw, height=sh, num_frames=2)
    o = ObjectTrack(id=1, boxes={1: np.array([x0, y0, x1, y1], float)})
    o.set_mask(0, mask)
    traj.objects.append(o)

    out = rescale(traj, dst)
    small = resize_crop(image, dst)
    assert small.shape == (dh, dw, 3) and (out.width, out.height) == dst
    # the object in the resized image is where the rescaled box says (to a pixel), and the rescaled
    # mask is the image's resize + crop
    seen = mask_box(small[..., 0] > 127)
    np.testing.assert_allclose(out.object(1).boxes[1], seen, atol=1.0)  # resize rounding: measured 0.5
    np.testing.assert_array_equal(out.object(1).mask(0), resize_crop(mask, dst))
    np.testing.assert_allclose(mask_box(out.object(1).mask(0)), seen, atol=1.0)  # measured 1


def test_rescale_drops_boxes_outside_and_clips():
    traj = Trajectory(width=200, height=100, num_frames=3)
    traj.objects.append(ObjectTrack(id=1, boxes={0: np.array([0, 10, 40, 50.0]),  # cropped away
                                                  1: np.array([40, 10, 80, 50.0]),  # clipped
                                                  2: np.array([90, 10, 110, 50.0])}))
    out = rescale(traj, (100, 100))  # keeps the middle 100 columns
    boxes = out.object(1).boxes
    assert sorted(boxes) == [1, 2]
    np.testing.assert_allclose(boxes[1], [0, 10, 30, 50])
    np.testing.assert_allclose(boxes[2], [40, 10, 60, 50])
    same = rescale(traj, (200, 100))
    assert same is not traj and sorted(same.object(1).boxes) == [0, 1, 2]


def test_resize_crop_layouts():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    video = rng.integers(0, 255, (4, 30, 40, 3), dtype=np.uint8)
    masks = rng.random((4, 30, 40)) < 0.5
    assert resize_crop(image, (20, 20)).shape == (20, 20, 3)
    out = resize_crop(video, (20, 20))
    assert out.shape == (4, 20, 20, 3)
    np.testing.assert_array_equal(out[2], resize_crop(video[2], (20, 20)))
    m = resize_crop(masks, (20, 20))
    assert m.shape == (4, 20, 20) and m.dtype == bool
    np.testing.assert_array_equal(m[1], resize_crop(masks[1], (20, 20)))
    assert resize_crop(image[..., :1], (20, 20)).shape == (20, 20, 1)
    assert resize_crop(image[..., 0], (20, 20)).shape == (20, 20)
    assert resize_crop(image, (40, 30)) is image
    labels = np.zeros((30, 40), np.uint8)
    labels[:, 20:] = 7
    assert set(np.unique(resize_crop(labels, (33, 17), nearest=True))) == {0, 7}
