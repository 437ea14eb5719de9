"""Conversions: masks -> boxes, interpolation, sparsifying, and rescaling together with the image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import disk
from hypothesis import given, settings
from hypothesis import strategies as st

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
    traj.objects[1].set_mask(6, np.zeros((40, 60), bool))  # absent on frame 6, where it had no box
    out = masks_to_boxes(traj)
    for o in out.objects:
        for t in range(9):
            expected = mask_box(o.mask(t))
            if expected is None:
                assert t not in o.boxes
            else:
                np.testing.assert_array_equal(o.boxes[t], expected)
    assert sorted(out.objects[0].boxes) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert sorted(out.objects[1].boxes) == [0, 1, 2, 3, 4, 5, 7, 8]
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
    a.set_mask(1, disk(50, 50, 40, 8, 3))  # present on frame 1: a mask says nothing about the box here
    b = ObjectTrack(id=2)
    traj.objects = [a, b]
    out = interpolate_boxes(traj)
    assert sorted(out.object(1).boxes) == [0, 1, 3, 4]
    np.testing.assert_allclose(out.object(1).boxes[3], [30, 30, 40, 40])
    np.testing.assert_allclose(out.object(1).boxes[1], [10, 10, 20, 20])
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


def test_sparsify_key_counts_at_the_bounds():
    traj = masks_to_boxes(moving_disks(num_frames=49, w=300))
    assert sorted(sparsify(traj, max_keys=1).objects[0].boxes) == [0, 48]  # 1 key: the last frame
    counts = {len(sparsify(traj, max_keys=3, seed=s).objects[0].boxes) - 1 for s in range(12)}
    assert counts == {1, 2, 3}  # each of 1..max_keys drawn
    short = Trajectory(width=50, height=50, num_frames=3)
    short.objects.append(ObjectTrack(id=1, boxes={0: np.array([0, 0, 10, 10.0])}))
    for s in range(5):  # at random too: at most T - 1 other keys, all of them here
        assert sorted(sparsify(short, num_keys=9, mode="random", seed=s).object(1).boxes) == [0, 1, 2]


@settings(max_examples=40, deadline=None)
@given(num_frames=st.integers(2, 30), num_keys=st.integers(1, 9), mode=st.sampled_from(["even", "random"]),
       seed=st.integers(0, 2**16))
def test_sparsify_keeps_frame_0_and_num_keys_other_frames(num_frames, num_keys, mode, seed):
    """Frame 0 plus min(num_keys, T - 1) distinct other frames, the boxes there those of the dense
    trajectory; even spacing always keeps the last frame."""
    traj = Trajectory(width=64, height=64, num_frames=num_frames)
    traj.objects.append(ObjectTrack(id=1, boxes={0: np.array([0, 0, 10, 10.0]),
                                                  num_frames - 1: np.array([40, 30, 60, 50.0])}))
    out = sparsify(traj, num_keys=num_keys, mode=mode, seed=seed).object(1)
    keys = sorted(out.boxes)
    assert keys[0] == 0 and len(keys) == min(num_keys, num_frames - 1) + 1
    assert all(0 < t < num_frames for t in keys[1:])
    if mode == "even":
        assert keys[-1] == num_frames - 1
    dense = interpolate_boxes(traj).object(1)
    for t in keys:
        np.testing.assert_array_equal(out.boxes[t], dense.boxes[t])


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


# (src, dst, the size the frame is resized to, the crop's origin): worked out by hand from "cover the
# target, then centre-crop on the nearest pixel"
HAND_WORKED = [
    ((854, 480), (720, 480), (854, 480), (67, 0)),
    ((100, 100), (20, 100), (100, 100), (40, 0)),   # a portrait crop of a square frame: the middle columns
    ((100, 100), (100, 20), (100, 100), (0, 40)),
    ((101, 100), (100, 99), (100, 100), (0, 0)),    # resized 100 x 99.01: the centre is 0.005 rows in
    ((100, 101), (99, 100), (100, 100), (0, 0)),
    ((100, 10), (10, 1), (10, 1), (0, 0)),          # one row: every 10 x 10 block averaged
    ((10, 100), (1, 10), (1, 10), (0, 0)),          # one column
]


@pytest.mark.parametrize("src, dst, resized, origin", HAND_WORKED)
def test_resize_crop_and_rescale_apply_the_hand_worked_transform(src, dst, resized, origin):
    """The image: OpenCV's area resize to `resized`, cropped at `origin`; a box: the same map."""
    (sw, sh), (dw, dh), (rw, rh), (x, y) = src, dst, resized, origin
    image = np.random.default_rng(1).integers(0, 256, (sh, sw, 3), dtype=np.uint8)
    expected = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)[y:y + dh, x:x + dw]
    np.testing.assert_array_equal(resize_crop(image, dst), expected)
    traj = Trajectory(width=sw, height=sh, num_frames=1)
    box = np.array([0.3 * sw, 0.2 * sh, 0.9 * sw, 0.95 * sh])
    traj.objects.append(ObjectTrack(id=1, boxes={0: box}))
    mapped = np.array([box[0] * rw / sw - x, box[1] * rh / sh - y, box[2] * rw / sw - x, box[3] * rh / sh - y])
    np.testing.assert_allclose(rescale(traj, dst).object(1).boxes[0], np.clip(mapped, 0, [dw, dh, dw, dh]))


def test_resize_crop_averages_areas_unless_nearest():
    """Halving: each pixel the mean of a 2 x 2 block (rounded to uint8: within 0.5 of it), or with
    nearest=True the block's top-left pixel (OpenCV's nearest neighbour samples floor(2 i))."""
    image = np.random.default_rng(2).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    blocks = image.reshape(10, 2, 20, 2, 3).mean(axis=(1, 3))
    assert np.abs(resize_crop(image, (20, 10)).astype(float) - blocks).max() <= 0.5
    np.testing.assert_array_equal(resize_crop(image, (20, 10), nearest=True), image[::2, ::2])


def test_rescale_clips_at_every_edge_and_keeps_thin_boxes():
    """Boxes leaving on the right or at the bottom are clipped there, or dropped when nothing is left;
    a box thinner than a pixel after downscaling is still inside, so kept."""
    traj = Trajectory(width=100, height=100, num_frames=2)
    traj.objects.append(ObjectTrack(id=1, boxes={0: np.array([60, 30, 100, 70.0]),  # out right and below
                                                  1: np.array([10, 70, 30, 90.0])}))  # below the crop
    wide = rescale(traj, (200, 50)).object(1).boxes  # x 2, then rows 75..125 kept
    assert sorted(wide) == [0]
    np.testing.assert_allclose(wide[0], [120, 0, 200, 50])
    traj = Trajectory(width=200, height=100, num_frames=2)
    traj.objects.append(ObjectTrack(id=1, boxes={0: np.array([160, 10, 190, 50.0]),  # right of the crop
                                                  1: np.array([140, 60, 160, 80.0])}))
    square = rescale(traj, (100, 100)).object(1).boxes  # columns 50..150 kept
    assert sorted(square) == [1]
    np.testing.assert_allclose(square[1], [90, 60, 100, 80])
    traj.objects[0].boxes = {0: np.array([10, 10, 11, 11.0]), 1: np.array([198, 99, 200, 100.0])}
    half = rescale(traj, (100, 50)).object(1).boxes
    np.testing.assert_allclose(half[0], [5, 5, 5.5, 5.5])
    np.testing.assert_allclose(half[1], [99, 49.5, 100, 50])


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
    assert resize_crop(masks[1], (20, 20)).dtype == bool  # one mask as well as a stack
    assert resize_crop(image, (40, 30)) is image
    labels = np.zeros((30, 40), np.uint8)
    labels[:, 20:] = 7
    assert set(np.unique(resize_crop(labels, (33, 17), nearest=True))) == {0, 7}
