"""Sparse mask annotations filled (trajectory.sparse, from-masks --fill), frame counts brought to 4k + 1
(ops.with_num_frames, frames_hint). Truth: shapes drawn with OpenCV on every frame, of which every
k-th is given as the annotation."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from magicmotion.errors import TrajectoryError
from magicmotion.trajectory import (ObjectTrack, Trajectory, from_mask_frames, frames_hint, mask_box, render,
                                    with_num_frames)
from magicmotion.trajectory.ops import valid_frame_counts
from magicmotion.trajectory.sparse import FILLS, fill_label_frames, is_incremental, shift_mask

SETTINGS = dict(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def ellipse_video(T=17, h=72, w=112) -> np.ndarray:
    """int64 (T, h, w) labels: object 1 an ellipse moving right and down and growing (linear in t),
    object 2 a rectangle moving left; drawn by OpenCV."""
    labels = np.zeros((T, h, w), np.uint8)
    for t in range(T):
        cv2.ellipse(labels[t], (int(round(18 + 3.5 * t)), int(round(20 + 1.25 * t))),
                    (int(round(8 + 0.5 * t)), int(round(6 + 0.25 * t))), 0, 0, 360, 1, -1)
        x = int(round(95 - 2.5 * t))
        cv2.rectangle(labels[t], (x, 50), (x + 10, 62), 2, -1)
    return labels.astype(np.int64)


def write_pngs(folder, labels, frames):
    folder.mkdir(exist_ok=True)
    for t in frames:
        Image.fromarray(labels[t].astype(np.uint8), "L").save(folder / f"{t:05d}.png")


def iou(a, b) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def box_iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_fills_against_the_drawn_truth():
    """Annotated every 4 frames. shift: the filled masks follow the truth: IoU mean >= 0.9 and worst
    >= 0.8 on the frames in between (measured mean 0.93, worst 0.83: the 11-px rectangle a pixel off
    where the drawing rounds a half-pixel position the other way); hold lags behind (measured mean
    0.40, worst 0.16: the bounds tell the two apart); box: boxes within a pixel of the drawn ones
    (OpenCV rounds centre and axes to whole pixels)."""
    truth = ellipse_video()
    frames = [0, 4, 8, 12, 16]
    labels = [truth[t] for t in frames]
    filled = {fill: fill_label_frames(labels, frames, 17, fill) for fill in ("shift", "hold", "box")}
    scores = {}
    for fill in ("shift", "hold"):
        traj = filled[fill]
        scores[fill] = [iou(traj.object(oid).mask(t), truth[t] == oid)
                        for oid in (1, 2) for t in range(17) if t not in frames]
        for t in frames:  # the annotation itself, unchanged
            for oid in (1, 2):
                np.testing.assert_array_equal(traj.object(oid).mask(t), truth[t] == oid)
    assert np.mean(scores["shift"]) >= 0.9 and min(scores["shift"]) >= 0.8, scores  # measured 0.94 / 0.83
    assert not (np.mean(scores["hold"]) >= 0.9 or min(scores["hold"]) >= 0.8), scores  # 0.41 / 0.16
    box = filled["box"]
    for oid in (1, 2):
        o = box.object(oid)
        assert sorted(o.boxes) == list(range(17)) and sorted(o.masks) == frames
        for t in range(17):
            np.testing.assert_allclose(o.boxes[t], mask_box(truth[t] == oid), atol=1.0)  # measured 1 px
    render(box, "box")
    with pytest.raises(TrajectoryError, match="needs a mask on every frame"):
        render(box, "mask")
    assert render(filled["shift"], "mask").shape == (17, 72, 112, 3)


@settings(**SETTINGS)
@given(step=st.tuples(st.integers(-4, 4), st.integers(-3, 3)), k=st.integers(2, 6),
       size=st.tuples(st.integers(4, 14), st.integers(4, 12)))
def test_shift_moves_a_rigid_shape_exactly(step, k, size):
    """A rectangle moving a whole number of pixels a frame, annotated every k frames: shift puts it on
    every frame between exactly where it is drawn (pixel for pixel: a rigid move of whole pixels)."""
    (dx, dy), (rw, rh) = step, size
    T = 4 * k + 1
    h, w = 40 + abs(dy) * T + rh, 40 + abs(dx) * T + rw
    x0, y0 = (20 if dx >= 0 else w - 20 - rw), (20 if dy >= 0 else h - 20 - rh)
    truth = np.zeros((T, h, w), np.int64)
    for t in range(T):
        truth[t, y0 + dy * t:y0 + dy * t + rh, x0 + dx * t:x0 + dx * t + rw] = 3
    frames = list(range(0, T, k))
    traj = fill_label_frames([truth[t] for t in frames], frames, T, "shift")
    for t in range(T):
        np.testing.assert_array_equal(traj.object(3).mask(t), truth[t] == 3)


def test_shift_mask_maps_box_onto_box():
    m = np.zeros((30, 40), bool)
    m[5:15, 4:12] = True
    moved = shift_mask(m, [4, 5, 12, 15], [20, 10, 36, 30])  # moved and scaled x2
    np.testing.assert_array_equal(mask_box(moved), [20, 10, 36, 30])
    assert moved.sum() == 16 * 20
    assert not shift_mask(m, [4, 5, 12, 15], [60, 40, 68, 50]).any()  # out of the frame


def test_complete_annotation_objects_leave_and_enter(tmp_path):
    """DAVIS-style complete annotation (each PNG shows every object present): an object missing from a
    PNG that shows others seen before is absent there, and stays absent until it is annotated again;
    one that first shows up later is absent before."""
    labels = np.zeros((9, 30, 40), np.int64)
    for t in range(9):
        labels[t, 2:10, 2 + t:10 + t] = 1
    labels[:4, 15:25, 20:30] = 2  # object 2 leaves after frame 3
    labels[6:, 20:28, 5:12] = 3  # object 3 enters on frame 6
    write_pngs(tmp_path / "m", labels, [0, 4, 8])
    traj = from_mask_frames(tmp_path / "m")
    assert not is_incremental([labels[0], labels[4], labels[8]])
    two, three = traj.object(2), traj.object(3)
    assert sorted(two.boxes) == [0, 1, 2, 3] and not two.mask(4).any()  # held until the frame it is absent
    assert sorted(three.boxes) == [8] and all(not three.mask(t).any() for t in range(8))
    assert sorted(traj.object(1).boxes) == list(range(9))
    np.testing.assert_array_equal(traj.object(1).mask(6), labels[6] == 1)  # shift, a whole pixel a frame


def test_judo_each_object_on_every_frame(real_samples):
    """The judo annotation is incremental (frames 5, 8, 13 each introduce one new object, nobody else
    drawn): filled, every object is on every frame, as annotated (before its frame too: the people
    at the side of the mat are there from the start), so nothing flickers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 00005.png is a pixel narrower
        traj = from_mask_frames(real_samples / "masks" / "judo", num_frames=17)
        raw = from_mask_frames(real_samples / "masks" / "judo", num_frames=17, fill="none")
    introduced = {1: 0, 2: 5, 3: 8, 4: 13}
    for o in traj.objects:
        own = raw.object(o.id).mask(introduced[o.id])
        assert sorted(o.masks) == sorted(o.boxes) == list(range(17))
        for t in range(17):
            np.testing.assert_array_equal(o.mask(t), own)
    maps = render(traj, "mask")
    assert all((maps[t] == maps[0]).all() for t in range(17))
    # the old reading: object 1 gone on frames 5, 8 and 13 (empty masks there), flickering
    assert not raw.object(1).mask(5).any()


def test_bike_held(real_samples):
    traj = from_mask_frames(real_samples / "masks" / "bike", num_frames=5)
    assert traj.num_frames == 5
    for o in traj.objects:
        assert sorted(o.masks) == list(range(5))
        np.testing.assert_array_equal(o.mask(4), o.mask(0))


def test_unknown_fill(tmp_path):
    write_pngs(tmp_path / "m", ellipse_video(1), [0])
    with pytest.raises(TrajectoryError, match=r"m: unknown fill 'blur': expected one of shift, box, hold, none"):
        from_mask_frames(tmp_path / "m", fill="blur")
    assert FILLS[0] == "shift"


# ---------------------------------------------------------------------------------------- frame counts


@given(n=st.integers(1, 400))
def test_valid_frame_counts(n):
    low, high = valid_frame_counts(n)
    assert (low - 1) % 4 == 0 and (high - 1) % 4 == 0 and low <= n < high and high - low == 4
    hint = frames_hint(n)
    assert (hint is None) == (n > 1 and (n - 1) % 4 == 0)
    if hint and n > 1:
        assert f"use --frames {high} (the last frame held)" in hint
        assert (f"or {low} (trimmed)" in hint) == (low > 1)


def test_frame_count_messages():
    assert valid_frame_counts(0) == (None, 1)  # nothing valid at or below 0 frames; 1 above
    assert frames_hint(14) == ("14 frames is not 4k + 1, as generation needs: use --frames 17 "
                               "(the last frame held) or 13 (trimmed)")
    assert frames_hint(3) == "3 frames is not 4k + 1, as generation needs: use --frames 5 (the last frame held)"
    assert frames_hint(14, "rerun with --num-frames", trim=False) == (
        "14 frames is not 4k + 1, as generation needs: rerun with --num-frames 17 (the last frame held)")
    assert frames_hint(1).startswith("1 frame: a still, not a video; use --frames 17")
    assert frames_hint(5) is None and frames_hint(17) is None


def test_with_num_frames_pads_and_trims():
    m = np.zeros((20, 30), bool)
    m[2:8, 3:9] = True
    o = ObjectTrack(1, boxes={0: np.array([3.0, 2, 9, 8]), 13: np.array([10.0, 2, 16, 8])})
    o.set_mask(0, m)
    dense = ObjectTrack(2)
    for t in range(14):
        dense.set_mask(t, np.roll(m, t, axis=1))
    traj = Trajectory(30, 20, 14, [o, dense])
    padded = with_num_frames(traj, 17)
    assert padded.num_frames == 17 and traj.num_frames == 14  # a copy
    np.testing.assert_array_equal(padded.object(1).boxes[16], [10, 2, 16, 8])
    assert sorted(padded.object(2).masks) == list(range(17))
    maps = render(padded, "box")
    np.testing.assert_array_equal(maps[16], maps[13])
    np.testing.assert_array_equal(maps[:14], render(traj, "box"))
    masks = render(with_num_frames(Trajectory(30, 20, 14, [dense]), 17), "mask")
    np.testing.assert_array_equal(masks[14:], np.repeat(masks[13:14], 3, axis=0))
    trimmed = with_num_frames(traj, 13)  # object 1 moves between keys 0 and 13: its box on frame 12 kept
    assert trimmed.num_frames == 13 and sorted(trimmed.object(1).boxes) == [0, 12]
    np.testing.assert_array_equal(render(trimmed, "box"), render(traj, "box")[:13])
    still = with_num_frames(traj, 1)
    assert still.num_frames == 1 and sorted(still.object(1).boxes) == [0] and sorted(still.object(2).masks) == [0]
    with pytest.raises(TrajectoryError, match="at least 1"):
        with_num_frames(traj, 0)


def test_trimmed_box_maps_are_the_first_frames_of_the_old_ones():
    """An object moving across the cut gets a key box on its last frame present (an empty mask on the
    new last frame: the one before), interpolated through the boxes of its non-empty masks as `render`
    does; an object whose keys end before the cut gets none, so its `sparse_box` maps are the old
    ones' first frames too; nor does one that comes in after the cut. Both defects (a box on an absent frame, or none and the motion before it
    lost; interpolation ignoring a mask's box) failed this before the fix."""
    early = ObjectTrack(1, boxes={0: np.array([2.0, 2, 8, 8]), 3: np.array([6.0, 2, 12, 8])})  # keys end at 3
    gone = ObjectTrack(2, boxes={0: np.array([14.0, 2, 20, 8]), 13: np.array([24.0, 4, 29, 10])})
    gone.set_mask(9, np.zeros((20, 30), bool))  # absent on frame 9, the last one after the trim
    bent = ObjectTrack(3, boxes={0: np.array([2.0, 12, 8, 18]), 13: np.array([22.0, 12, 28, 18])})
    m = np.zeros((20, 30), bool)
    m[10:16, 14:20] = True
    bent.set_mask(5, m)  # its box on frame 5 is the mask's
    late = ObjectTrack(4, boxes={11: np.array([0.0, 0, 4, 4]), 13: np.array([4.0, 0, 8, 4])})
    for t in range(10):
        late.set_mask(t, np.zeros((20, 30), bool))  # absent until after the cut
    traj = Trajectory(30, 20, 14, [early, gone, bent, late])
    trimmed = with_num_frames(traj, 10)
    assert trimmed.object(4).boxes == {} and sorted(trimmed.object(4).masks) == list(range(10))
    assert sorted(trimmed.object(1).boxes) == [0, 3]
    assert sorted(trimmed.object(2).boxes) == [0, 8] and not trimmed.object(2).mask(9).any()
    assert sorted(trimmed.object(3).boxes) == [0, 9]
    np.testing.assert_allclose(trimmed.object(3).boxes[9], [14 + 8 * 4 / 8, 10 + 2 * 4 / 8, 20 + 8 * 4 / 8, 16 + 2 * 4 / 8])
    np.testing.assert_array_equal(render(trimmed, "box"), render(traj, "box")[:10])
    alone = Trajectory(30, 20, 14, [early])
    np.testing.assert_array_equal(render(with_num_frames(alone, 10), "sparse_box"), render(alone, "sparse_box")[:10])


def test_annotation_said_instead_of_detected(tmp_path):
    """Object 1 on frame 0, object 2 alone on frame 4: auto reads that as incremental (object 1 on
    every frame); `complete` says object 1 is gone on frame 4; `incremental` forces the other reading."""
    labels = np.zeros((5, 20, 30), np.int64)
    labels[0, 2:8, 2:8] = 1
    labels[4, 10:16, 12:20] = 2
    write_pngs(tmp_path / "m", labels, [0, 4])
    auto = from_mask_frames(tmp_path / "m")
    assert sorted(auto.object(1).boxes) == sorted(auto.object(2).boxes) == list(range(5))
    complete = from_mask_frames(tmp_path / "m", annotation="complete")
    assert sorted(complete.object(1).boxes) == [0, 1, 2, 3] and sorted(complete.object(2).boxes) == [4]
    assert not complete.object(2).mask(0).any()
    with pytest.raises(TrajectoryError, match=r"m: unknown annotation 'full'"):
        from_mask_frames(tmp_path / "m", annotation="full")


@settings(**SETTINGS)
@given(data=st.data(), fill=st.sampled_from(["shift", "box", "hold", "none"]),
       frames=st.lists(st.integers(0, 12), min_size=1, max_size=5, unique=True), extra=st.integers(0, 4))
def test_any_sparse_annotation_fills_to_a_valid_trajectory(data, fill, frames, extra):
    """Random rectangles of ids 1..3 on random annotated frames: the filled trajectory validates, keeps
    every annotated mask as drawn (box: the masks it keeps), has a box exactly where a mask is not
    empty, and renders as box and sparse_box (and mask, where it fills masks)."""
    frames = sorted(frames)
    T = frames[-1] + 1 + extra
    labels = []
    for _ in frames:
        label = np.zeros((24, 32), np.int64)
        for oid in data.draw(st.lists(st.integers(1, 3), max_size=3, unique=True)):
            x, y = data.draw(st.integers(0, 24)), data.draw(st.integers(0, 16))
            label[y:y + 6, x:x + 7] = oid
        labels.append(label)
    if not any(label.any() for label in labels):
        return
    traj = fill_label_frames(labels, frames, T, fill).validate()
    assert traj.num_frames == T and traj.ids == sorted({int(i) for lab in labels for i in np.unique(lab) if i})
    for o in traj.objects:
        for t, label in zip(frames, labels):
            if t in o.masks and (label == o.id).any():
                np.testing.assert_array_equal(o.mask(t), label == o.id)
        if fill in ("shift", "hold"):
            assert sorted(o.masks) == list(range(T))
            assert sorted(o.boxes) == [t for t in range(T) if o.mask(t).any()]
    render(traj, "box"), render(traj, "sparse_box")
    if fill in ("shift", "hold"):
        render(traj, "mask")
