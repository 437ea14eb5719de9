"""Video segmentation and tracking: SAM 2 video (transformers' `Sam2VideoModel`) prompted on any frame
of a clip with boxes, clicked points or masks, propagated forwards from that frame to the last and,
when it is not the first, backwards to frame 0.

Used by MagicData curation (boxes on frame 0 from grounding), trajectories from a reference video
(phrases, clicks or boxes on a chosen frame) and the benchmark's scorer (the controlled objects'
frame-0 masks).

The processor is `Sam2VideoProcessor` when it can be built (it needs torchvision). Without torchvision
the same steps run here in plain torch: frames resized to the model's square input (bilinear, with
antialiasing) and normalised with the folder's mean/std (ImageNet's by default), boxes scaled to that
square and given as the two corner points (labels 2 and 3), masks resized to it and thresholded at
0.5, low-resolution masks upsampled bilinearly to the frame and thresholded at 0 — what the processor
does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_SAM2 = "facebook/sam2.1-hiera-large"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# progress(frame, done, total): called after each tracked frame (frame: its index in the clip).
Progress = Callable[[int, int, int], None]


@dataclass
class Prompt:
    """One object to track, on clip frame `frame`: a box [x0, y0, x1, y1], positive points (P, 2), or
    a mask bool (H, W) (exactly one of them)."""

    label: str = ""
    frame: int = 0
    box: np.ndarray | None = None
    points: np.ndarray | None = None
    score: float | None = None  # the grounding score, for objects found by phrase
    mask: np.ndarray | None = None

    def describe(self) -> str:
        if self.label:
            return repr(self.label)
        if self.points is not None:
            return "points " + ";".join(f"{x:g},{y:g}" for x, y in self.points)
        if self.box is not None:
            return "box " + ",".join(f"{v:g}" for v in self.box)
        return "mask"


def load_sam2_processor(name: str):
    """Sam2VideoProcessor.from_pretrained(name), or None when it cannot be built (torchvision is
    missing, or the folder has no processor files): the tracker then preprocesses by itself. (A
    real download has a preprocessor_config.json; without torchvision transformers refuses it with a
    ValueError.)"""
    try:
        from transformers import Sam2VideoProcessor

        return Sam2VideoProcessor.from_pretrained(name)
    except (ImportError, OSError, ValueError):
        return None


def preprocessor_stats(folder: str | Path) -> tuple[tuple, tuple]:
    """image_mean / image_std of a local SAM 2 folder's (video_)preprocessor_config.json (ImageNet's
    when it has none)."""
    from ..errors import ModelError

    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = Path(folder) / name
        if path.is_file():
            try:
                cfg = json.loads(path.read_text())
                return tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                raise ModelError(f"{path}: malformed JSON") from None
    return IMAGENET_MEAN, IMAGENET_STD


class Sam2VideoTracker:
    """Masks of prompted objects through a clip.

    model: a Sam2VideoModel; processor: a Sam2VideoProcessor or None (built-in preprocessing with
    image_mean / image_std); mask_threshold: on the mask logits."""

    def __init__(self, model, processor=None, mask_threshold: float = 0.0, image_mean=IMAGENET_MEAN,
                 image_std=IMAGENET_STD):
        self.model = model.eval()
        self.processor = processor
        self.mask_threshold = float(mask_threshold)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_SAM2, device: str = "cpu", **kwargs):
        """A local folder saved by transformers, or a hub id (fetched at the user's site)."""
        from transformers import Sam2VideoModel

        from .loading import load_pretrained

        # any error: a folder without weights, or weights it cannot read
        where, model = load_pretrained(name, "SAM 2 video model", Sam2VideoModel.from_pretrained, errors=Exception)
        mean, std = preprocessor_stats(where) if Path(where).is_dir() else (IMAGENET_MEAN, IMAGENET_STD)
        return cls(model.to(device), load_sam2_processor(where), image_mean=mean, image_std=std, **kwargs)

    @property
    def image_size(self) -> int:
        size = self.model.config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def device(self):
        return self.model.device

    # -------------------------------------------------------------------------------- session

    def _session(self, frames: np.ndarray):
        """An inference session holding the preprocessed clip."""
        import torch
        import torch.nn.functional as F
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        dtype = self.model.dtype
        if self.processor is not None:
            return self.processor.init_video_session(video=frames, inference_device=self.device,
                                                     dtype=dtype)
        s = self.image_size
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        video = F.interpolate(video, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        video = ((video - mean) / std).to(dtype)
        h, w = frames.shape[1:3]
        return Sam2VideoInferenceSession(video=video, video_height=h, video_width=w,
                                         inference_device=self.device,
                                         inference_state_device=self.device,
                                         video_storage_device=self.device, dtype=dtype)

    def _add_prompts(self, session, frame: int, prompts: list[Prompt], obj_ids: list[int]) -> None:
        import torch
        import torch.nn.functional as F

        s = self.image_size
        for p, oid in zip(prompts, obj_ids):
            if self.processor is not None:
                if p.mask is not None:
                    kwargs = {"input_masks": [np.asarray(p.mask, dtype=bool)]}
                elif p.box is not None:
                    kwargs = {"input_boxes": [[[float(v) for v in p.box]]]}
                else:
                    kwargs = {"input_points": [[[[float(x), float(y)] for x, y in p.points]]],
                              "input_labels": [[[1] * len(p.points)]]}
                self.processor.add_inputs_to_inference_session(
                    inference_session=session, frame_idx=frame, obj_ids=[oid], **kwargs)
                continue
            idx = session.obj_id_to_idx(oid)
            if p.mask is not None:  # as the processor's input_masks: resized to the square, >= 0.5
                m = torch.from_numpy(np.asarray(p.mask, dtype=bool)).float()[None, None]
                m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
                session.add_mask_inputs(idx, frame, (m >= 0.5).float().to(self.device))
                continue
            scale = torch.tensor([s / session.video_width, s / session.video_height], dtype=torch.float32)
            if p.box is not None:
                coords = torch.as_tensor(p.box, dtype=torch.float32).reshape(2, 2)
                labels = torch.tensor([2, 3], dtype=torch.int32)  # box corners
            else:
                coords = torch.as_tensor(p.points, dtype=torch.float32).reshape(-1, 2)
                labels = torch.ones(len(coords), dtype=torch.int32)  # positive clicks
            session.add_point_inputs(idx, frame, {"point_coords": (coords * scale)[None, None],
                                                  "point_labels": labels[None, None]})
            session.remove_mask_inputs(idx, frame)
        session.obj_with_new_inputs = list(obj_ids)

    def _upsample(self, pred_masks, size: tuple[int, int]):
        import torch.nn.functional as F

        if self.processor is not None:
            return self.processor.post_process_masks([pred_masks], original_sizes=[list(size)],
                                                     mask_threshold=self.mask_threshold,
                                                     binarize=True)[0]
        up = F.interpolate(pred_masks.float(), size=size, mode="bilinear", align_corners=False)
        return up > self.mask_threshold

    # ---------------------------------------------------------------------------------- track

    def track(self, frames: np.ndarray, prompts: list[Prompt], progress: Progress | None = None) -> np.ndarray:
        """frames: uint8 (T, H, W, 3); prompts: one per object. Returns bool (N, T, H, W).

        Objects prompted on the same frame are tracked together in one session (forwards, then
        backwards); each other prompt frame gets its own session, so an object never sees frames
        before its prompt without its prompt's memory."""
        import torch

        frames = np.asarray(frames)
        t, h, w = frames.shape[:3]
        masks = np.zeros((len(prompts), t, h, w), dtype=bool)
        starts = sorted({p.frame for p in prompts})
        total, done = t * len(starts), 0
        with torch.no_grad():
            for start in starts:
                members = [k for k, p in enumerate(prompts) if p.frame == start]
                obj_ids = [k + 1 for k in members]
                session = self._session(frames)
                self._add_prompts(session, start, [prompts[k] for k in members], obj_ids)
                for reverse in ((False, True) if start > 0 else (False,)):
                    for out in self.model.propagate_in_video_iterator(session, start_frame_idx=start,
                                                                      reverse=reverse):
                        if reverse and out.frame_idx == start:
                            continue  # the prompt frame, already written going forwards
                        up = self._upsample(out.pred_masks, (h, w))  # (N, 1, H, W)
                        for k, oid in enumerate(out.object_ids):
                            masks[oid - 1, out.frame_idx] = up[k, 0].cpu().numpy()
                        done += 1
                        if progress is not None:
                            progress(int(out.frame_idx), done, total)
        return masks

    def __call__(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """frames: uint8 (T, H, W, 3); boxes: float (N, 4) x0, y0, x1, y1 on frame 0.
        Returns bool (N, T, H, W): object n's mask on every frame."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        frames = np.asarray(frames)
        if len(boxes) == 0:
            return np.zeros((0, *frames.shape[:3]), dtype=bool)
        return self.track(frames, [Prompt(box=b) for b in boxes])


__all__ = ["DEFAULT_SAM2", "IMAGENET_MEAN", "IMAGENET_STD", "Progress", "Prompt", "Sam2VideoTracker",
           "load_sam2_processor", "preprocessor_stats"]
