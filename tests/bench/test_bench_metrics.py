"""Mask IoU, Box IoU and the clip averages against hand-computed cases; the Fréchet distance against
the closed form; FID through torchmetrics with a tiny random extractor; the FVD plumbing with a tiny
TorchScript detector."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from magicmotion.bench.metrics import (FIDMeter, GaussianAccumulator, I3DFeatures, box_iou, clip_scores,
                                       frechet_distance, frechet_features, gaussian_stats, mask_iou)
from magicmotion.errors import BenchError
from magicmotion.trajectory import ObjectTrack, Trajectory, from_label_masks


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------------- IoU


def test_mask_iou_hand_computed():
    a = rect(10, 10, 0, 0, 4, 4)  # 16 px
    b = rect(10, 10, 2, 2, 6, 6)  # 16 px, overlap 2x2 = 4
    assert mask_iou(a, b) == pytest.approx(4 / 28)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, rect(10, 10, 5, 5, 9, 9)) == 0.0


def test_mask_iou_empty_cases():
    empty = np.zeros((5, 5), dtype=bool)
    assert mask_iou(empty, empty) == 1.0  # both absent: they agree
    assert mask_iou(empty, rect(5, 5, 0, 0, 1, 1)) == 0.0
    with pytest.raises(BenchError, match="differ in shape"):
        mask_iou(empty, np.zeros((5, 6), dtype=bool))


def test_box_iou_hand_computed():
    assert box_iou([0, 0, 4, 4], [2, 2, 6, 6]) == pytest.approx(4 / 28)
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 5]) == pytest.approx(0.5)
    assert box_iou([0, 0, 2, 2], [3, 3, 5, 5]) == 0.0
    assert box_iou([1.5, 0, 3.5, 1], [2.5, 0, 4.5, 1]) == pytest.approx(1 / 3)


def test_box_iou_absent_boxes():
    assert box_iou(None, None) == 1.0
    assert box_iou(None, [0, 0, 1, 1]) == 0.0
    assert box_iou([0, 0, 1, 1], None) == 0.0
    assert box_iou([3, 3, 3, 5], None) == 1.0  # a zero-area box is an absent one


def test_clip_scores_average_frames_then_objects():
    """Object 1 is found exactly; object 2 is half found on frame 1 and missed on frame 2. Frame 0
    (the prompt) is not scored."""
    h = w = 8
    labels = np.zeros((3, h, w), dtype=np.int32)
    labels[:, 0:2, 0:2] = 1
    labels[:, 4:8, 4:6] = 2  # 8 px
    ref = from_label_masks(labels)
    pred = {1: labels == 1, 2: np.zeros((3, h, w), dtype=bool)}
    pred[2][0] = labels[0] == 2
    pred[2][1, 4:8, 4:5] = True  # half of it: IoU 0.5; box 1x4 vs 2x4: 0.5
    s = clip_scores(pred, ref)
    o1, o2 = s["objects"][1], s["objects"][2]
    assert o1["mask_frames"] == [None, 1.0, 1.0] and o1["mask_iou"] == 1.0
    assert o2["mask_frames"] == [None, 0.5, 0.0]
    assert o2["box_frames"] == [None, 0.5, 0.0]
    assert o2["mask_iou"] == pytest.approx(0.25)
    assert s["mask_iou"] == pytest.approx((1.0 + 0.25) / 2)
    assert s["box_iou"] == pytest.approx((1.0 + 0.25) / 2)


def test_clip_scores_object_leaving_the_frame():
    """The object leaves after frame 1: a segmenter that also loses it scores 1 on the empty frames,
    one that keeps a mask there scores 0."""
    h = w = 6
    labels = np.zeros((4, h, w), dtype=np.int32)
    labels[0, 2:4, 2:4] = 1
    labels[1, 2:4, 4:6] = 1  # at the edge; frames 2-3: gone
    ref = from_label_masks(labels)
    follows = {1: labels == 1}
    s = clip_scores(follows, ref)
    assert s["objects"][1]["mask_frames"] == [None, 1.0, 1.0, 1.0]
    assert s["objects"][1]["box_frames"] == [None, 1.0, 1.0, 1.0]
    stays = {1: np.repeat((labels[1] == 1)[None], 4, axis=0)}
    s = clip_scores(stays, ref)
    assert s["objects"][1]["mask_frames"] == [None, 1.0, 0.0, 0.0]
    assert s["mask_iou"] == pytest.approx(1 / 3)


def test_clip_scores_box_only_reference_and_unscored_frames():
    """A trajectory with boxes but no masks on some frames: Box IoU there, Mask IoU skipped."""
    traj = Trajectory(8, 8, 3, [ObjectTrack(1, boxes={0: np.array([0., 0, 4, 4]),
                                                      1: np.array([0., 0, 4, 4])})])
    traj.objects[0].set_mask(0, rect(8, 8, 0, 0, 4, 4))
    pred = {1: np.stack([rect(8, 8, 0, 0, 4, 4), rect(8, 8, 0, 0, 4, 2), rect(8, 8, 0, 0, 1, 1)])}
    s = clip_scores(pred, traj)
    o = s["objects"][1]
    assert o["mask_frames"] == [None, None, None] and o["mask_iou"] is None
    assert o["box_frames"] == [None, 0.5, None]  # frame 2 has no reference at all
    assert s["mask_iou"] is None and s["box_iou"] == 0.5


def test_clip_scores_bad_inputs():
    labels = np.zeros((2, 4, 4), dtype=np.int32)
    labels[:, :2, :2] = 1
    ref = from_label_masks(labels)
    with pytest.raises(BenchError, match="no predicted masks for object 1"):
        clip_scores({}, ref)
    with pytest.raises(BenchError, match="object 1: predicted masks are"):
        clip_scores({1: np.zeros((3, 4, 4), bool)}, ref)


# -------------------------------------------------------------------------------- Fréchet


def test_frechet_distance_diagonal_closed_form():
    """For diagonal covariances: |mu1 - mu2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i))."""
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    # float64: measured 0 for both (the square root of a diagonal product is exact); 1e-9 leaves room
    # for another scipy's sqrtm iterations (float64 eps 2.2e-16)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_full_covariance_rotation():
    """Rotating both Gaussians together leaves the distance unchanged."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + np.eye(4), b @ b.T + np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    d = frechet_distance(mu1, s1, mu2, s2)
    assert d > 0
    # float64 sqrtm of a full 4x4 product: measured 3e-15 relative (was rel=1e-6; 1e-10 leaves room for
    # other BLAS/scipy versions)
    assert frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T) == pytest.approx(d, rel=1e-10)


def test_frechet_of_samples_approaches_closed_form():
    rng = np.random.default_rng(1)
    x = rng.normal([0, 0], [1, 2], size=(20000, 2))
    y = rng.normal([1, 0], [2, 2], size=(20000, 2))
    closed = 1.0 + (1 + 4 - 2 * 2) + (4 + 4 - 2 * 4)
    # sampling error of 20000 draws: measured 0.028 from the closed form 2.0 (seed 1); the wrong
    # variant, standard deviations where the variances go, lands 0.8 away
    assert frechet_features(x, y) == pytest.approx(closed, abs=0.1)
    stds = frechet_distance(x.mean(0), np.diag(x.std(0)), y.mean(0), np.diag(y.std(0)))
    assert stds != pytest.approx(closed, abs=0.1)
    with pytest.raises(BenchError, match="at least 2"):
        gaussian_stats(x[:1])
    with pytest.raises(BenchError, match="shapes do not fit"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_gaussian_accumulator_matches_numpy_and_adds_up():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(30, 5))
    a, b = GaussianAccumulator(5), GaussianAccumulator(5)
    a.add(f[:12])
    b.add(f[12:])
    mu, cov = (a + b).stats()
    # default tolerance: float64 rounding of sums of 30 terms (measured 2e-16)
    assert np.allclose(mu, f.mean(0)) and np.allclose(cov, np.cov(f, rowvar=False))


# -------------------------------------------------------------------------------------- FID


class TinyExtractor(torch.nn.Module):
    """A random feature extractor for uint8 images (N, 3, H, W) -> (N, 8)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x.float() / 255).mean(dim=(2, 3))


@pytest.mark.slow
def test_fid_with_custom_extractor_matches_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(0)
    real = rng.integers(0, 200, (40, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(60, 256, (40, 16, 16, 3), dtype=np.uint8)
    extractor = TinyExtractor()
    meter = FIDMeter(extractor)
    meter.update(real[:25], real=True, group="a")
    meter.update(fake[:25], real=False, group="a")
    meter.update(real[25:], real=True, group="b")
    meter.update(fake[25:], real=False, group="b")
    reference = FrechetInceptionDistance(feature=extractor)
    reference.update(torch.from_numpy(real).permute(0, 3, 1, 2), real=True)
    reference.update(torch.from_numpy(fake).permute(0, 3, 1, 2), real=False)
    # the same float32 features, float64 statistics on both sides: measured 1.4e-8 relative (was
    # rel=1e-4; 1e-6 leaves room for torchmetrics' own sqrtm); FID here is 0.046
    assert meter.compute() == pytest.approx(float(reference.compute()), rel=1e-6)
    assert meter.compute() > 0.01
    assert meter.compute(["a"]) != pytest.approx(meter.compute(), rel=1e-6)  # one bucket alone: 1.3% off
    same = FIDMeter(extractor)
    same.update(real, real=True)
    same.update(real, real=False)
    assert same.compute() == pytest.approx(0.0, abs=1e-6)  # measured 0: identical statistics


def test_fid_without_weights_says_what_is_needed(tmp_path, monkeypatch):
    with pytest.raises(BenchError, match=r"--inception"):
        FIDMeter(tmp_path / "missing.pth")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch_fidelity" else real_find_spec(name, *a))
    with pytest.raises(BenchError, match=r"torch-fidelity is not installed.*pt_inception-2015-12-05"):
        FIDMeter(None)


# -------------------------------------------------------------------------------------- FVD


class TinyI3D(torch.nn.Module):
    """Stands in for StyleGAN-V's i3d_torchscript.pt: same call signature, (B, 6) features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.proj = torch.nn.Linear(3, 6)

    def forward(self, x, rescale: bool = True, resize: bool = True, return_features: bool = False):
        # defaults opposite to what I3DFeatures must pass (the frames are already resized and in
        # [-1, 1]; the features, not the logits): a call that leaves one out fails here
        if rescale or resize or not return_features:
            raise RuntimeError("called with rescale/resize on or without return_features")
        pooled = x.mean(dim=(2, 3, 4))  # (B, 3)
        return self.proj(pooled * 3.0)


@pytest.fixture
def tiny_i3d(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what the real file is
        torch.jit.save(torch.jit.script(TinyI3D()), str(path))
    return path


def test_i3d_preprocessing_and_features(tiny_i3d):
    det = I3DFeatures(tiny_i3d, num_frames=4)
    video = np.zeros((6, 30, 50, 3), dtype=np.uint8)
    video[..., 0] = 255
    x = det.preprocess(video)
    assert tuple(x.shape) == (3, 4, 224, 224)  # first 4 frames, shorter side 224, centre crop
    assert float(x[0].min()) == pytest.approx(1.0) and float(x[1].max()) == pytest.approx(-1.0)
    f = det([video, video // 2])
    assert f.shape == (2, 6) and not np.allclose(f[0], f[1])


def test_fvd_plumbing_separates_distributions(tiny_i3d):
    det = I3DFeatures(tiny_i3d, num_frames=3)
    rng = np.random.default_rng(0)
    real = [rng.integers(0, 120, (3, 16, 16, 3), dtype=np.uint8) for _ in range(12)]
    fake = [rng.integers(100, 256, (3, 16, 16, 3), dtype=np.uint8) for _ in range(12)]
    far = frechet_features(det(fake), det(real))
    near = frechet_features(det(real[:6]), det(real[6:]))
    assert far > 10 * near


def test_i3d_missing_or_bad_file(tmp_path):
    with pytest.raises(BenchError, match=r"I3D detector not found.*--i3d"):
        I3DFeatures(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(BenchError, match="not a TorchScript I3D detector"):
        I3DFeatures(bad)


# ------------------------------------------------------------------- gaps found by mutation testing


def test_mask_iou_of_label_maps_counts_any_nonzero_pixel():
    """Masks given as labels (2 where another tool writes 1) are the same masks."""
    a = rect(6, 6, 0, 0, 3, 3).astype(np.uint8) * 2
    b = rect(6, 6, 0, 0, 3, 3).astype(np.uint8)
    assert mask_iou(a, b) == 1.0 == mask_iou(b, a)


def test_box_iou_of_disjoint_and_degenerate_boxes():
    assert box_iou([0, 0, 2, 2], [5, 0, 7, 2]) == 0.0  # apart in x only: no overlap
    assert box_iou([0, 0, 2, 2], [0, 5, 2, 7]) == 0.0  # apart in y only
    assert box_iou([0, 1, 4, 5], [1, 3, 5, 7]) == pytest.approx(6 / 26)  # x and y overlaps differ
    assert box_iou([0, 3, 4, 5], [1, 0, 5, 4]) == pytest.approx(3 / 21)  # a's y0 beyond b's x0
    assert box_iou([3, 3, 5, 3], [3, 3, 5, 4]) == 0.0  # zero height: absent
    assert box_iou([3, 3, 5, 3], None) == 1.0  # both absent


def test_reference_masks_are_the_trajectory_masks():
    from magicmotion.bench.metrics import reference_masks

    labels = np.zeros((2, 8, 8), np.int32)
    labels[:, 1:4, 2:6] = 1
    labels[1, 5:7, 0:3] = 2
    masks = reference_masks(from_label_masks(labels))
    np.testing.assert_array_equal(masks[1][1], labels[1] == 1)
    np.testing.assert_array_equal(masks[2][1], labels[1] == 2)
    assert not masks[2][0].any()


def test_clip_scores_take_label_valued_predictions():
    labels = np.zeros((3, 8, 8), np.int32)
    labels[:, 2:6, 2:6] = 1
    ref = from_label_masks(labels)
    scores = clip_scores({1: (labels == 1).astype(np.uint8) * 7}, ref)
    assert scores["mask_iou"] == 1.0 and scores["box_iou"] == 1.0


def test_gaussian_stats_of_two_samples_in_float64():
    f = np.array([[1, 2, 3], [3, 2, 0]], np.float32)  # N = 2 < D = 3
    mean, cov = gaussian_stats(f)
    assert mean.dtype == np.float64 and cov.shape == (3, 3)
    np.testing.assert_allclose(mean, [2, 2, 1.5])
    np.testing.assert_allclose(cov, np.cov(f.T.astype(np.float64)))  # columns are the variables
    with pytest.raises(BenchError, match="at least 2"):
        gaussian_stats(f[:1])


@pytest.mark.parametrize("h, w", [(30, 50), (60, 36)])
def test_i3d_preprocess_is_opencv_resize_and_centre_crop(tiny_i3d, h, w):
    """StyleGAN-V's preprocessing, checked against OpenCV's bilinear resize (half-pixel centres, as
    torch's align_corners=False): 16 frames, shorter side 224, the centre 224 x 224, in [-1, 1]."""
    import math

    import cv2

    det = I3DFeatures(tiny_i3d)
    video = np.random.default_rng(0).integers(0, 256, (20, h, w, 3), dtype=np.uint8)
    x = det.preprocess(video)
    assert tuple(x.shape) == (3, 16, 224, 224)
    scale = 224 / min(h, w)
    nh, nw = (224, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), 224)
    y0, x0 = (nh - 224) // 2, (nw - 224) // 2
    for t in (0, 15):
        big = cv2.resize(video[t].astype(np.float32) / 255, (nw, nh), interpolation=cv2.INTER_LINEAR)
        expected = big[y0:y0 + 224, x0:x0 + 224] * 2 - 1
        # two float32 bilinear implementations: measured 6.2e-6 (about 50 float32 ulps of 1); 1e-4 is
        # kept for OpenCV's SIMD paths on other CPUs. The wrong variant, the crop one pixel off along
        # the long side, must fail it
        np.testing.assert_allclose(x[:, t].permute(1, 2, 0).numpy(), expected, atol=1e-4)
        dy, dx = int(nh > 224), int(nw > 224)
        off = big[y0 + dy:y0 + dy + 224, x0 + dx:x0 + dx + 224] * 2 - 1
        assert np.abs(x[:, t].permute(1, 2, 0).numpy() - off).max() > 1e-4


def test_i3d_bad_file_message_names_the_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(BenchError) as e:
        I3DFeatures(bad)
    assert "NoneType" not in str(e.value) and "Error)" in str(e.value)


def test_a_failing_i3d_detector_is_named_with_the_input_shape(tiny_i3d):
    det = I3DFeatures(tiny_i3d, num_frames=2)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    det.detector = broken
    with pytest.raises(BenchError, match=r"i3d_torchscript\.pt: the I3D detector failed on videos of shape "
                                         r"\(1, 3, 2, 224, 224\) \(RuntimeError: boom\)"):
        det([np.zeros((2, 8, 8, 3), np.uint8)])
