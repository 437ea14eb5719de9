"""Frame-0 PSNR, late-frame background PSNR and object colour error (metrics.appearance_scores) on
clips whose answer is known, checked against OpenCV's PSNR and numpy written another way; and a wrong
variant of each (object pixels counted as background, early frames counted, per-pixel colour
distance) that the clips tell apart."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magicmotion.bench.metrics import PSNR_CAP, appearance_scores, late_frames, psnr
from magicmotion.errors import BenchError
from magicmotion.trajectory import ObjectTrack, Trajectory, from_label_masks

T, H, W = 9, 24, 32  # late frames: 4..8


def scene(seed: int = 0):
    """A textured clip (values 40..215, so +-40 never clips) with two objects drawn by OpenCV: a disc
    moving right and a fixed rectangle; labels (T, H, W) and the reference trajectory from them."""
    rng = np.random.default_rng(seed)
    real = rng.integers(40, 216, (T, H, W, 3)).astype(np.uint8)
    labels = np.zeros((T, H, W), dtype=np.uint8)
    for t in range(T):
        cv2.circle(labels[t], (6 + 2 * t, 8), 4, 1, thickness=-1)
        cv2.rectangle(labels[t], (20, 14), (27, 20), 2, thickness=-1)
    return real, labels, from_label_masks(labels.astype(np.int32))


def cv2_psnr(a, b) -> float:
    """OpenCV's PSNR of two uint8 arrays (its own MSE over every element, peak 255)."""
    return cv2.PSNR(np.ascontiguousarray(a), np.ascontiguousarray(b))


def test_identical_clip_scores_the_cap_and_no_colour_error():
    real, _, ref = scene()
    s = appearance_scores(real, real.copy(), ref)
    assert s == {"frame0_psnr": PSNR_CAP, "background_psnr": PSNR_CAP, "colour_error": 0.0}


@pytest.mark.parametrize("offset", [1, 10, 40])
def test_constant_offset_gives_the_known_db_and_colour_distance(offset):
    real, _, ref = scene()
    video = (real.astype(int) + offset).astype(np.uint8)
    s = appearance_scores(video, real, ref)
    known = 20 * math.log10(255 / offset)  # MSE = offset^2 on every value
    # 1e-9: the same closed form in float64
    assert s["frame0_psnr"] == pytest.approx(known, abs=1e-9)
    assert s["frame0_psnr"] == pytest.approx(cv2_psnr(video[0], real[0]), abs=1e-9)
    assert s["background_psnr"] == pytest.approx(known, abs=1e-9)
    assert s["colour_error"] == pytest.approx(offset * math.sqrt(3), abs=1e-9)  # |(d, d, d)|


def test_background_change_in_late_frames_only():
    """The background of frames 4..8 brightened by 20, the objects and the early frames untouched:
    frame 0 is perfect, the late background is 20 log10(255 / 20) dB, the colours are kept. Counting
    the (unchanged) object pixels as background, or the early frames, would read higher."""
    real, labels, ref = scene()
    late = list(late_frames(T))
    assert late == [4, 5, 6, 7, 8]
    video = real.copy()
    bg = labels == 0
    bg[:late[0]] = False
    video[bg] = real[bg] + 20
    s = appearance_scores(video, real, ref)
    assert s["frame0_psnr"] == PSNR_CAP
    assert s["colour_error"] == 0.0
    # OpenCV on the background pixels of the late frames, gathered by numpy (N, 3)
    expected = cv2_psnr(video[late][labels[late] == 0], real[late][labels[late] == 0])
    assert expected == pytest.approx(20 * math.log10(255 / 20), abs=1e-9)
    assert s["background_psnr"] == pytest.approx(expected, abs=1e-9)
    # wrong variants: object pixels counted as background; every frame instead of the late ones
    with_objects = cv2_psnr(video[late], real[late])
    all_frames = cv2_psnr(video[labels == 0], real[labels == 0])
    assert with_objects > s["background_psnr"] + 0.5 and all_frames > s["background_psnr"] + 1.0


def test_early_background_change_is_not_late_background():
    real, labels, ref = scene()
    video = real.copy()
    early = np.zeros_like(labels, dtype=bool)
    early[1:4] = labels[1:4] == 0
    video[early] = real[early] - 30
    s = appearance_scores(video, real, ref)
    assert s["background_psnr"] == PSNR_CAP and s["frame0_psnr"] == PSNR_CAP


def test_object_colour_shifted_by_a_known_vector():
    """Object 2's pixels shifted by (30, -40, 0) (length 50) in the late frames, object 1 untouched:
    colour error (50 + 0) / 2 objects = 25; the background is untouched (cap). With the background
    counted over the object pixels too it would not be."""
    real, labels, ref = scene()
    video = real.copy()
    late = list(late_frames(T))
    obj = np.zeros_like(labels, dtype=bool)
    obj[late] = labels[late] == 2
    video[obj] = (real[obj].astype(int) + [30, -40, 0]).astype(np.uint8)
    s = appearance_scores(video, real, ref)
    assert s["colour_error"] == pytest.approx(25.0, abs=1e-9)
    assert s["background_psnr"] == PSNR_CAP and s["frame0_psnr"] == PSNR_CAP
    assert cv2_psnr(video[late], real[late]) < 40  # the wrong variant sees the object's change


def test_colour_error_is_the_distance_of_mean_colours_not_the_mean_pixel_distance():
    """Inside object 1, +20 on one half of its pixels and -20 on the other half: the mean colour is
    kept (error 0 for it), while the mean per-pixel distance would be 20 sqrt(3)."""
    real, labels, ref = scene()
    video = real.copy()
    for t in late_frames(T):
        ys, xs = np.nonzero(labels[t] == 1)
        sign = np.where(np.arange(len(ys)) % 2 == 0, 20, -20)
        if len(ys) % 2:  # an odd count: leave the last pixel as it is, so the signs balance
            sign[-1] = 0
        video[t, ys, xs] = (real[t, ys, xs].astype(int) + sign[:, None]).astype(np.uint8)
    s = appearance_scores(video, real, ref)
    assert s["colour_error"] == pytest.approx(0.0, abs=1e-9)
    per_pixel = np.mean([np.linalg.norm(video[t][labels[t] == 1].astype(float) - real[t][labels[t] == 1], axis=1).mean()
                         for t in late_frames(T)])
    assert per_pixel > 30  # the wrong variant: ~ 20 sqrt(3) = 34.6


def test_colour_error_averages_frames_then_objects():
    """Object 1 off by 10 (grey) on one late frame of five, object 2 by 40 on all: (2 + 40 sqrt 3) / 2
    per object of an equal weight, not weighted by pixel count or frame count."""
    real, labels, ref = scene()
    video = real.copy()
    m1 = labels[6] == 1
    video[6][m1] = real[6][m1] + 10
    m2 = np.zeros_like(labels, dtype=bool)
    m2[4:] = labels[4:] == 2
    video[m2] = real[m2] - 40
    s = appearance_scores(video, real, ref)
    expected = (10 * math.sqrt(3) / 5 + 40 * math.sqrt(3)) / 2
    assert s["colour_error"] == pytest.approx(expected, abs=1e-9)


def test_a_box_only_frame_keeps_its_box_out_of_the_background():
    """An object with a mask on frame 0 and only boxes after: its box is not background."""
    real = np.full((T, H, W, 3), 100, np.uint8)
    traj = Trajectory(W, H, T, [ObjectTrack(1, boxes={t: np.array([4., 4, 12, 10]) for t in range(T)})])
    m0 = np.zeros((H, W), bool)
    m0[4:10, 4:12] = True
    traj.objects[0].set_mask(0, m0)
    video = real.copy()
    video[4:, 4:10, 4:12] = 0  # inside the box on the late frames
    s = appearance_scores(video, real, traj)
    assert s["background_psnr"] == PSNR_CAP
    assert s["colour_error"] == pytest.approx(100 * math.sqrt(3), abs=1e-9)  # the box stands for the mask


def test_nothing_to_measure_is_none():
    real = np.full((T, H, W, 3), 100, np.uint8)
    labels = np.zeros((T, H, W), np.int32)
    labels[0, :4, :4] = 1  # the object leaves after frame 0
    s = appearance_scores(real, real, from_label_masks(labels))
    assert s["colour_error"] is None and s["background_psnr"] == PSNR_CAP
    everywhere = np.ones((T, H, W), np.int32)  # no background pixel at all
    assert appearance_scores(real, real, from_label_masks(everywhere))["background_psnr"] is None


def test_bad_shapes_are_named():
    real, _, ref = scene()
    with pytest.raises(BenchError, match=r"the generated video is \(9, 24, 31, 3\)"):
        appearance_scores(real[:, :, :31], real, ref)
    with pytest.raises(BenchError, match="the true video is"):
        appearance_scores(real, real[:8], ref)
    with pytest.raises(BenchError, match="images differ in shape"):
        psnr(real[0], real[1, :, :4])
    with pytest.raises(BenchError, match="the mask is"):
        psnr(real[0], real[0], np.ones((H, 3), bool))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_psnr_matches_opencv_on_random_images(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    if np.array_equal(a, b):
        assert psnr(a, b) == PSNR_CAP
    else:
        assert psnr(a, b) == pytest.approx(cv2_psnr(a, b), abs=1e-9)  # both float64 closed forms
