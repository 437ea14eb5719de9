"""Image segmentation from clicks: SAM 2 for images (transformers' `Sam2Model`), point prompts -> one
mask. The drawing UI uses it to turn clicks on the first frame into an object's mask."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .sam2_video import IMAGENET_MEAN, IMAGENET_STD


class Sam2ImageSegmenter:
    """Point prompts -> a mask with SAM 2 for images (transformers' `Sam2Model`).

    Preprocessing is SAM 2's own (what `Sam2Processor` does): the image resized to the model's square
    input size, scaled to [0, 1] and normalised with the ImageNet mean and std (or the values of the
    folder's preprocessor_config.json); point coordinates scaled the same way; the best of the three
    proposed masks (highest predicted IoU) upsampled to the image size and thresholded at 0.
    Done here so that no torchvision is needed.
    """

    def __init__(self, model, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD):
        self.model = model.eval()
        cfg = model.config.vision_config.backbone_config
        size = cfg.image_size
        self.input_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self._cache: tuple[bytes, object] | None = None  # (image digest, image embeddings)

    @classmethod
    def from_pretrained(cls, path: str) -> "Sam2ImageSegmenter":
        """Load a SAM 2 model folder (or hub id) saved by transformers."""
        from transformers import Sam2Model

        from ..errors import ModelError
        from ..hub import check_transformers_folder, resolve_pretrained

        path = str(resolve_pretrained(path, "SAM 2 model"))  # a folder, a hub id, or its cached copy offline
        check_transformers_folder(path, "SAM 2 model")  # no code from the folder (auto_map)
        try:
            model = Sam2Model.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: cannot load a SAM 2 model ({e})") from None
        kwargs = {}
        pre = Path(path) / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            kwargs = {k: cfg[k] for k in ("image_mean", "image_std") if k in cfg}
        return cls(model, **kwargs)

    def _pixel_values(self, image: np.ndarray):
        import torch

        s = self.input_size
        resized = cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        resized = (resized - np.array(self.image_mean, np.float32)) / np.array(self.image_std, np.float32)
        return torch.from_numpy(resized).permute(2, 0, 1)[None]

    def __call__(self, image: np.ndarray, points, labels) -> np.ndarray:
        """image uint8 (H, W, 3); points [(x, y), ...]; labels [1 (on the object) or 0 (not), ...]
        -> bool (H, W)."""
        import hashlib

        import torch
        import torch.nn.functional as F

        from ..errors import TrajectoryError

        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        if not points:
            raise TrajectoryError("click at least one point on the object")
        if len(points) != len(labels):
            raise TrajectoryError(f"{len(points)} points but {len(labels)} labels")
        s = self.input_size
        pts = torch.tensor([[[[x * s / w, y * s / h] for x, y in points]]], dtype=torch.float32)
        lbl = torch.tensor([[[int(v) for v in labels]]], dtype=torch.long)
        digest = hashlib.sha1(image.tobytes() + bytes(str(image.shape), "ascii")).digest()
        with torch.no_grad():
            if self._cache is None or self._cache[0] != digest:
                embeddings = self.model.get_image_embeddings(self._pixel_values(image))
                self._cache = (digest, embeddings)
            out = self.model(image_embeddings=self._cache[1], input_points=pts, input_labels=lbl,
                             multimask_output=True)
        masks = out.pred_masks[0, 0]  # (3, h', w') logits
        best = int(out.iou_scores[0, 0].argmax())
        logits = F.interpolate(masks[best][None, None].float(), size=(h, w), mode="bilinear",
                               align_corners=False)[0, 0]
        return (logits > 0).numpy()


__all__ = ["Sam2ImageSegmenter"]
