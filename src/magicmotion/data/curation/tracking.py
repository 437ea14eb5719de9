"""Segmentation and tracking: Sam2VideoModel prompted with the first-frame boxes, propagated over all
frames of the clip; then masks -> a trajectory (a mask on every frame, a box wherever it is not empty).

The processor is `Sam2VideoProcessor` when it can be built (it needs torchvision). Without torchvision
the same steps run here in plain torch: frames resized to the model's square input and normalised
with the ImageNet mean/std, boxes scaled to that square and given as the two corner points (labels 2
and 3), low-resolution masks upsampled bilinearly to the frame and thresholded at 0 — what the
processor does.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SAM2 = "facebook/sam2.1-hiera-large"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_sam2_processor(name: str):
    """Sam2VideoProcessor.from_pretrained(name), or None when it cannot be built (torchvision is
    missing, or the folder has no processor files): the tracker then preprocesses by itself."""
    try:
        from transformers import Sam2VideoProcessor

        return Sam2VideoProcessor.from_pretrained(name)
    except (ImportError, OSError):
        return None


class Sam2Tracker:
    """Masks of boxed objects through a clip.

    model: a Sam2VideoModel; processor: a Sam2VideoProcessor or None (built-in preprocessing);
    mask_threshold: on the mask logits."""

    def __init__(self, model, processor=None, mask_threshold: float = 0.0):
        self.model = model.eval()
        self.processor = processor
        self.mask_threshold = float(mask_threshold)

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_SAM2, device: str = "cpu", **kwargs):
        from transformers import Sam2VideoModel

        from ...errors import ModelError
        from ...hub import resolve_pretrained

        where = str(resolve_pretrained(name, "SAM 2 video model"))
        from ...models.allowed import check_transformers_folder

        check_transformers_folder(where, "SAM 2 video model")  # no code from the folder (auto_map)
        try:
            model = Sam2VideoModel.from_pretrained(where)
        except (OSError, ValueError) as e:
            raise ModelError(f"{name}: cannot load the SAM 2 video model ({e})") from None
        return cls(model.to(device), load_sam2_processor(where), **kwargs)

    @property
    def image_size(self) -> int:
        size = self.model.config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def device(self):
        return self.model.device

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
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        video = (video - mean) / std
        h, w = frames.shape[1:3]
        return Sam2VideoInferenceSession(video=video, video_height=h, video_width=w,
                                         inference_device=self.device,
                                         inference_state_device=self.device,
                                         video_storage_device=self.device, dtype=dtype)

    def _add_boxes(self, session, boxes: np.ndarray, obj_ids: list[int]) -> None:
        import torch

        if self.processor is not None:
            self.processor.add_inputs_to_inference_session(
                inference_session=session, frame_idx=0, obj_ids=obj_ids,
                input_boxes=[[[float(v) for v in b] for b in boxes]])
            return
        s = self.image_size
        h, w = session.video_height, session.video_width
        scale = torch.tensor([s / w, s / h, s / w, s / h], dtype=torch.float32)
        for k, oid in enumerate(obj_ids):
            idx = session.obj_id_to_idx(oid)
            coords = (torch.as_tensor(boxes[k], dtype=torch.float32) * scale).reshape(1, 1, 2, 2)
            labels = torch.tensor([[[2, 3]]], dtype=torch.int32)  # box corners
            session.add_point_inputs(idx, 0, {"point_coords": coords, "point_labels": labels})
            session.remove_mask_inputs(idx, 0)
        session.obj_with_new_inputs = list(obj_ids)

    def _upsample(self, pred_masks, size: tuple[int, int]):
        import torch.nn.functional as F

        if self.processor is not None:
            return self.processor.post_process_masks([pred_masks], original_sizes=[list(size)],
                                                     mask_threshold=self.mask_threshold,
                                                     binarize=True)[0]
        up = F.interpolate(pred_masks.float(), size=size, mode="bilinear", align_corners=False)
        return up > self.mask_threshold

    def __call__(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """frames: uint8 (T, H, W, 3); boxes: float (N, 4) x0, y0, x1, y1 on frame 0.
        Returns bool (N, T, H, W): object n's mask on every frame."""
        import torch

        frames = np.asarray(frames)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        t, h, w = frames.shape[:3]
        n = len(boxes)
        masks = np.zeros((n, t, h, w), dtype=bool)
        if n == 0:
            return masks
        obj_ids = list(range(1, n + 1))
        with torch.no_grad():
            session = self._session(frames)
            self._add_boxes(session, boxes, obj_ids)
            for out in self.model.propagate_in_video_iterator(session, start_frame_idx=0):
                up = self._upsample(out.pred_masks, (h, w))  # (N, 1, H, W)
                for k, oid in enumerate(out.object_ids):
                    masks[obj_ids.index(oid), out.frame_idx] = up[k, 0].cpu().numpy()
        return masks


def masks_to_trajectory(masks: np.ndarray, labels: list[str], caption: str = "",
                        source: str = ""):
    """bool (N, T, H, W) -> Trajectory with objects 1..N' (those whose frame-0 mask is not empty,
    renumbered in order): a mask on every frame, a box wherever the mask is not empty."""
    from ...trajectory import ObjectTrack, Trajectory

    masks = np.asarray(masks, dtype=bool)
    n, t, h, w = masks.shape
    traj = Trajectory(width=w, height=h, num_frames=t, caption=caption, source=source)
    for k in range(n):
        if not masks[k, 0].any():
            continue
        label = labels[k] if k < len(labels) else ""
        traj.objects.append(ObjectTrack.from_masks(len(traj.objects) + 1, label, masks[k]))
    return traj
