"""The benchmark's metrics: Mask IoU and Box IoU (does the generated video follow the trajectory?), FID
and FVD (does it look like real video?).

Mask IoU / Box IoU (the paper's trajectory metrics). Every controlled object is segmented in the
generated video, prompted by the condition's frame-0 mask (`segmenters.py`), and compared on each frame
with the reference trajectory of the benchmark clip:

- one frame, one object: `mask_iou(pred, ref)` = |pred & ref| / |pred | ref|; `box_iou` is the IoU of
  the tight boxes around the two masks. When both are empty (the object is absent in the reference and
  the segmenter finds nothing), the frame scores 1.0: they agree (the DAVIS convention). When only one
  is empty it scores 0.0.
- frame 0 is not scored: it is the segmenter's prompt (and the generation's input image).
- a frame without a reference (no mask there for Mask IoU; no mask and no box for Box IoU) is skipped.
- averages are nested: frames -> object (mean over its scored frames), objects -> clip (mean over the
  clip's objects), clips -> bucket / overall (mean over clips). Each clip weighs the same whatever its
  number of objects or frames.

Frame-0 PSNR, late-frame background PSNR and object colour error (does the video keep the picture it
starts from?), against the benchmark clip's own frames and its reference masks (`appearance_scores`):

- frame 0 PSNR: 10 log10(255^2 / MSE) over every pixel and channel of frame 0 (uint8 scale),
  capped at `PSNR_CAP` dB (identical frames);
- background PSNR: the same over the background pixels of the late frames only: the pixels outside
  every object's reference mask (and outside its box on a frame where it has a box and no mask) on
  frames T // 2 .. T - 1, one MSE pooled over all of them;
- object colour error: for each object and late frame where its reference mask is not empty, the
  Euclidean distance between the mean RGB (0..255) of the generated pixels inside that mask and the
  mean RGB of the true pixels inside it; averaged over the frames per object, then over the objects
  (0: the colours kept; 441.7: black for white).

Each is one number per clip, and clips -> bucket / overall are plain means, like the IoUs.

FID and FVD are Fréchet distances between Gaussians fitted to features of generated and ground-truth
samples: FID on frames (Inception through torchmetrics' `FrechetInceptionDistance`), FVD on clips (the
I3D TorchScript detector that StyleGAN-V and later papers use). See docs/benchmark.md.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import BenchError
from ..trajectory import Trajectory, decode_mask, mask_box

# Where the weights come from, for the messages shown when they are missing.
INCEPTION_HELP = (
    "FID needs torchmetrics' Inception network: `pip install torch-fidelity`; its weights "
    "(pt_inception-2015-12-05-6726825d.pth, from github.com/toshas/torch-fidelity releases) are "
    "downloaded on first use. Offline, download that file and pass it with --inception PATH."
)
I3D_HELP = (
    "FVD needs the I3D TorchScript detector used by StyleGAN-V (i3d_torchscript.pt, "
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt); download it and pass it with "
    "--i3d PATH."
)


# ------------------------------------------------------------------------------- IoU, one frame


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of the same shape; 1.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise BenchError(f"mask_iou: masks differ in shape: {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return np.count_nonzero(a & b) / union


def box_iou(a, b) -> float:
    """IoU of two boxes [x0, y0, x1, y1) (pixels, end exclusive). None (or a box of zero area) means
    absent: both absent -> 1.0, one absent -> 0.0."""
    a, b = _box_or_none(a), _box_or_none(b)
    if a is None and b is None:
        return 1.0
    if a is None or b is None:
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _box_or_none(box):
    if box is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


# ---------------------------------------------------------------------------- IoU, one clip


def reference_masks(traj: Trajectory) -> dict[int, dict[int, np.ndarray]]:
    """object id -> frame -> bool (H, W) mask, for every frame where the trajectory has a mask."""
    return {o.id: {t: decode_mask(rle) for t, rle in o.masks.items()} for o in traj.objects}


def clip_scores(pred: dict[int, np.ndarray], ref: Trajectory, skip_first: bool = True) -> dict:
    """Mask IoU and Box IoU of one clip.

    pred: object id -> bool (T, H, W) predicted masks (from a segmenter) for every object of `ref`;
    ref: the reference trajectory, T frames of W x H. Returns {"mask_iou", "box_iou" (clip means, None
    when nothing was scored), "objects": {id: {"mask_iou", "box_iou", "mask_frames": [per-frame IoU or
    None], "box_frames": [...]}}}. Frame 0 is not scored when `skip_first` (it is the prompt)."""
    T, H, W = ref.num_frames, ref.height, ref.width
    objects = {}
    for o in ref.objects:
        if o.id not in pred:
            raise BenchError(f"{ref.where()}: no predicted masks for object {o.id}")
        p = np.asarray(pred[o.id], dtype=bool)
        if p.shape != (T, H, W):
            raise BenchError(f"{ref.where()}: object {o.id}: predicted masks are {p.shape}, the "
                             f"reference is {(T, H, W)} (frames, height, width)")
        mask_frames, box_frames = [], []
        for t in range(T):
            if skip_first and t == 0:
                mask_frames.append(None)
                box_frames.append(None)
                continue
            pbox = mask_box(p[t])
            if t in o.masks:
                m = decode_mask(o.masks[t])
                mask_frames.append(mask_iou(p[t], m))
                box_frames.append(box_iou(pbox, mask_box(m)))
            elif t in o.boxes:
                mask_frames.append(None)
                box_frames.append(box_iou(pbox, o.boxes[t]))
            else:
                mask_frames.append(None)
                box_frames.append(None)
        objects[int(o.id)] = {"mask_iou": _mean(mask_frames), "box_iou": _mean(box_frames),
                              "mask_frames": mask_frames, "box_frames": box_frames}
    return {"mask_iou": _mean([v["mask_iou"] for v in objects.values()]),
            "box_iou": _mean([v["box_iou"] for v in objects.values()]),
            "objects": objects}


def _mean(values) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


# ------------------------------------------------------------------ appearance, one clip

# Identical frames have an infinite PSNR; they score this instead, so means stay finite. A one-level
# error on every uint8 value is 48.1 dB, so 100 dB can only mean identical.
PSNR_CAP = 100.0


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None, peak: float = 255.0) -> float | None:
    """PSNR (dB) of image(s) `a` against `b` (..., H, W, C) over the pixels where the bool mask `where`
    (..., H, W) holds (default all), one MSE over those pixels and every channel; at most `PSNR_CAP`;
    None when `where` selects no pixel."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise BenchError(f"psnr: images differ in shape: {a.shape} and {b.shape}")
    if where is not None:
        where = np.asarray(where, dtype=bool)
        if where.shape != a.shape[:-1]:
            raise BenchError(f"psnr: the mask is {where.shape}, the images {a.shape}")
        if not where.any():
            return None
        a, b = a[where], b[where]
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * np.log10(peak * peak / mse))


def late_frames(num_frames: int) -> range:
    """The last half of a clip's frames: T // 2 .. T - 1 (frames 8..16 of 17)."""
    return range(num_frames // 2, num_frames)


def object_regions(traj: Trajectory) -> dict[int, dict[int, np.ndarray]]:
    """object id -> frame -> bool (H, W): its reference mask there, or its filled box on a frame where
    it has a box and no mask (frames with neither are left out)."""
    H, W = traj.height, traj.width
    out = {}
    for o in traj.objects:
        regions = {t: decode_mask(rle) for t, rle in o.masks.items()}
        for t, box in o.boxes.items():
            if t not in regions and box is not None:
                x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                m = np.zeros((H, W), dtype=bool)
                m[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
                regions[t] = m
        out[o.id] = regions
    return out


def appearance_scores(video: np.ndarray, real: np.ndarray, ref: Trajectory) -> dict:
    """Frame-0 PSNR, late-frame background PSNR and object colour error of one generated clip
    (see the module docstring). video, real: uint8 (T, H, W, 3), the generated and the true frames;
    ref: the reference trajectory of that clip at that size. Returns {"frame0_psnr", "background_psnr",
    "colour_error"} (None where nothing could be measured: no background pixel, no object visible in
    the late frames)."""
    video, real = np.asarray(video), np.asarray(real)
    T, H, W = ref.num_frames, ref.height, ref.width
    for name, v in (("generated", video), ("true", real)):
        if v.shape != (T, H, W, 3):
            raise BenchError(f"{ref.where()}: the {name} video is {v.shape}, the reference is "
                             f"{(T, H, W, 3)} (frames, height, width, RGB)")
    regions = object_regions(ref)
    late = list(late_frames(T))
    covered = np.zeros((len(late), H, W), dtype=bool)
    for frames in regions.values():
        for i, t in enumerate(late):
            if t in frames:
                covered[i] |= frames[t]
    errors = []
    for frames in regions.values():
        per_frame = []
        for t in late:
            m = frames.get(t)
            if m is None or not m.any():
                continue
            gen = video[t][m].astype(np.float64).mean(axis=0)
            true = real[t][m].astype(np.float64).mean(axis=0)
            per_frame.append(float(np.linalg.norm(gen - true)))
        if per_frame:
            errors.append(float(np.mean(per_frame)))
    return {"frame0_psnr": psnr(video[0], real[0]),
            "background_psnr": psnr(video[late], real[late], ~covered),
            "colour_error": float(np.mean(errors)) if errors else None}


# --------------------------------------------------------------------------- Fréchet distance


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    As in pytorch-fid / StyleGAN-V: scipy's sqrtm; when the product is singular, eps is added to the
    diagonals; a small imaginary part from numerical error is dropped."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise BenchError(f"frechet_distance: shapes do not fit: mu {mu1.shape} {mu2.shape}, "
                         f"sigma {s1.shape} {s2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * eps
        covmean = _sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    value = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # a distance; rounding can leave -1e-12 for identical inputs


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "matrix is singular": handled by the caller
        out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise BenchError(f"need at least 2 feature vectors (N, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_features(fake: np.ndarray, real: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features (N, D)."""
    return frechet_distance(*gaussian_stats(fake), *gaussian_stats(real))


# ---------------------------------------------------------------------------------------- FID


class GaussianAccumulator:
    """Running count, sum and sum of outer products of feature vectors (float64): a Gaussian fit
    without keeping the features. Accumulators add up (`+`), so buckets combine into the overall."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        self.n += len(f)
        self.sum += f.sum(axis=0)
        self.outer += f.T @ f

    def __add__(self, other: "GaussianAccumulator") -> "GaussianAccumulator":
        out = GaussianAccumulator(len(self.sum))
        out.n, out.sum, out.outer = self.n + other.n, self.sum + other.sum, self.outer + other.outer
        return out

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and unbiased covariance (D, D), as torchmetrics' FID computes them."""
        if self.n < 2:
            raise BenchError(f"need at least 2 samples for a covariance, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


class FIDMeter:
    """FID of generated vs. ground-truth frames, by group (bucket) and overall.

    The feature network is torchmetrics' `FrechetInceptionDistance`'s: `inception` None gives its
    Inception-v3 (2048-d pool features; torch-fidelity fetches the weights at first use), a path gives
    that network with torch-fidelity's weights file (pt_inception-2015-12-05-6726825d.pth), an nn.Module
    mapping uint8 images (N, 3, H, W) to features (N, D) is a custom extractor. Features are reduced to
    running Gaussian fits per group (`GaussianAccumulator`); the distance is `frechet_distance`.
    Raises BenchError with `INCEPTION_HELP` when the network cannot be built."""

    def __init__(self, inception=None, device: str = "cpu"):
        import importlib.util

        import torch

        if not isinstance(inception, torch.nn.Module) and importlib.util.find_spec("torch_fidelity") is None:
            raise BenchError(f"torch-fidelity is not installed. {INCEPTION_HELP}")
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError as e:
            raise BenchError(f"FID needs torchmetrics ({e}); `pip install torchmetrics`") from None
        self.device = torch.device(device)
        try:
            if isinstance(inception, torch.nn.Module):
                metric = FrechetInceptionDistance(feature=inception)
            elif inception is not None:
                path = Path(inception)
                if not path.is_file():
                    raise BenchError(f"{path}: Inception weights not found. {INCEPTION_HELP}")
                metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
            else:
                metric = FrechetInceptionDistance(feature=2048)
        except BenchError:
            raise
        except Exception as e:  # torch-fidelity missing, download failed, bad weights file
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise BenchError(f"cannot build the Inception network for FID ({type(e).__name__}: "
                             f"{first}). {INCEPTION_HELP}") from None
        self.extractor = metric.inception.to(self.device).eval()
        self.groups: dict[str, dict[bool, GaussianAccumulator]] = {}

    def features(self, frames: np.ndarray, batch: int = 32) -> np.ndarray:
        """uint8 frames (N, H, W, 3) -> features (N, D)."""
        import torch

        out = []
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).permute(0, 3, 1, 2)
            with torch.no_grad():
                out.append(self.extractor(x.to(self.device)).double().cpu().numpy().reshape(len(x), -1))
        return np.concatenate(out)

    def update(self, frames: np.ndarray, real: bool, group: str = "all") -> None:
        f = self.features(np.asarray(frames))
        sides = self.groups.setdefault(group, {})
        sides.setdefault(bool(real), GaussianAccumulator(f.shape[1])).add(f)

    def compute(self, groups=None) -> float | None:
        """FID over the given groups (default all); None with fewer than 2 frames on a side."""
        chosen = [self.groups[g] for g in (self.groups if groups is None else groups) if g in self.groups]
        acc = {}
        for side in (True, False):
            parts = [g[side] for g in chosen if side in g]
            if not parts:
                return None
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            if total.n < 2:
                return None
            acc[side] = total
        return frechet_distance(*acc[False].stats(), *acc[True].stats())


# ---------------------------------------------------------------------------------------- FVD


class I3DFeatures:
    """I3D features of videos from a TorchScript detector file (StyleGAN-V's i3d_torchscript.pt).

    Preprocessing as in StyleGAN-V / common_metrics_on_video_quality: the first `num_frames` frames,
    scaled to [0, 1], resized (bilinear) so the shorter side is 224, centre-cropped to 224 x 224,
    mapped to [-1, 1], laid out (B, 3, T, 224, 224); the detector is called with rescale=False,
    resize=False, return_features=True and returns (B, 400) logits-layer features."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", num_frames: int = 16,
                 resolution: int = 224):
        import torch

        path = Path(path)
        if not path.is_file():
            raise BenchError(f"{path}: I3D detector not found. {I3D_HELP}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the file is TorchScript
                self.detector = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:  # not a TorchScript archive
            raise BenchError(f"{path}: not a TorchScript I3D detector ({type(e).__name__}). "
                             f"{I3D_HELP}") from None
        self.path, self.device = path, torch.device(device)
        self.num_frames, self.resolution = int(num_frames), int(resolution)

    def preprocess(self, video: np.ndarray):
        """uint8 (T, H, W, 3) -> float (3, T', R, R) in [-1, 1] (T' = min(T, num_frames))."""
        import math

        import torch
        import torch.nn.functional as F

        v = torch.from_numpy(np.ascontiguousarray(video[:self.num_frames])).float().div(255)
        v = v.permute(0, 3, 1, 2)  # T, 3, H, W
        _, _, h, w = v.shape
        r = self.resolution
        scale = r / min(h, w)
        size = (r, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), r)
        v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
        y0, x0 = (v.shape[2] - r) // 2, (v.shape[3] - r) // 2
        v = v[:, :, y0:y0 + r, x0:x0 + r]
        return ((v - 0.5) * 2).permute(1, 0, 2, 3).contiguous()

    def __call__(self, videos: list[np.ndarray]) -> np.ndarray:
        """Features (N, D) of uint8 videos (T, H, W, 3)."""
        import torch

        x = torch.stack([self.preprocess(v) for v in videos]).to(self.device)
        try:
            with torch.no_grad():
                f = self.detector(x, rescale=False, resize=False, return_features=True)
        except Exception as e:
            raise BenchError(f"{self.path}: the I3D detector failed on videos of shape "
                             f"{tuple(x.shape)} ({type(e).__name__}: {e})") from None
        return f.detach().float().cpu().numpy().reshape(len(videos), -1)
