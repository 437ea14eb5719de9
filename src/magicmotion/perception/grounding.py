"""Open-vocabulary detection: GroundingDinoForObjectDetection + GroundingDinoProcessor find one box
per object name (MagicData curation grounds the caption's objects in the first frame with it).

The thresholds mean what they mean in transformers' `post_process_grounded_object_detection`: a query
(a predicted box) is kept when its best token probability exceeds `box_threshold`, and a token belongs
to its phrase when its probability exceeds `text_threshold` (the authors used 0.25 and 0.3). Here each
object name is its own phrase of the prompt "name one. name two."; a phrase gets the kept query with
its highest probability over the phrase's tokens (above text_threshold). Two names that land on
nearly the same box (IoU > `same_box_iou`) keep only the more confident one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

DEFAULT_GROUNDING = "IDEA-Research/grounding-dino-base"
BOX_THRESHOLD = 0.25
TEXT_THRESHOLD = 0.3
_ARTICLE = re.compile(r"^(a|an|the|some|two|three)\s+", re.IGNORECASE)


def normalise_name(name: str) -> str:
    """"  The Brown  dog." -> "brown dog" (an object name as a phrase of the prompt)."""
    text = re.sub(r"\s+", " ", name).strip().strip(".,;:!\"'`").strip().lower()
    return _ARTICLE.sub("", text).strip()


@dataclass
class Detection:
    """One grounded object: its name, box [x0, y0, x1, y1] in pixels of the frame, and score."""

    label: str
    box: np.ndarray
    score: float

    def to_dict(self) -> dict:
        return {"label": self.label, "box": [round(float(v), 3) for v in self.box],
                "score": round(float(self.score), 4)}

    @classmethod
    def from_dict(cls, d: dict) -> "Detection":
        return cls(label=d["label"], box=np.asarray(d["box"], dtype=np.float64), score=float(d["score"]))


def prompt_for(names: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Names -> the Grounding DINO prompt "a. b." (lower case) and each name's character span."""
    text, spans = "", []
    for name in names:
        name = name.strip().lower().replace(".", " ")
        if text:
            text += " "
        spans.append((len(text), len(text) + len(name)))
        text += name + "."
    return text, spans


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class GroundingDinoGrounder:
    """Boxes for object names in images, in batches."""

    def __init__(self, model, processor, box_threshold: float = BOX_THRESHOLD,
                 text_threshold: float = TEXT_THRESHOLD, same_box_iou: float = 0.9):
        self.model = model.eval()
        self.processor = processor
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.same_box_iou = float(same_box_iou)

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_GROUNDING, device: str = "cpu", **kwargs):
        from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor

        from .loading import load_pretrained

        def load(where):
            return GroundingDinoProcessor.from_pretrained(where), GroundingDinoForObjectDetection.from_pretrained(where)

        _, (processor, model) = load_pretrained(name, "Grounding DINO model", load)
        return cls(model.to(device), processor, **kwargs)

    def token_phrases(self, text: str, spans: list[tuple[int, int]], length: int) -> list[list[int]]:
        """For each name span, the token positions (of the processor's tokenisation) inside it."""
        enc = self.processor.tokenizer(text, return_offsets_mapping=True)
        positions = [[] for _ in spans]
        for t, (a, b) in enumerate(enc["offset_mapping"][:length]):
            if b <= a:  # special tokens
                continue
            for k, (s, e) in enumerate(spans):
                if a >= s and b <= e:
                    positions[k].append(t)
        return positions

    def __call__(self, images: list[np.ndarray], names: list[list[str]]) -> list[list[Detection]]:
        """images: uint8 (H, W, 3) each; names: the object names of each image. Returns, per image,
        the detections in the order of its names (a name that is not found is left out)."""
        import torch

        results: list[list[Detection]] = [[] for _ in images]
        todo = [i for i, n in enumerate(names) if n]
        if not todo:
            return results
        prompts = [prompt_for(names[i]) for i in todo]
        inputs = self.processor(images=[images[i] for i in todo], text=[p[0] for p in prompts],
                                return_tensors="pt", padding=True)
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model(**inputs)
        probs = out.logits.sigmoid().float().cpu()  # (B, queries, max_text_len)
        boxes = out.pred_boxes.float().cpu()  # (B, queries, 4) cx, cy, w, h in [0, 1]
        for b, i in enumerate(todo):
            h, w = images[i].shape[:2]
            cx, cy, bw, bh = boxes[b].unbind(-1)
            xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            xyxy = (xyxy * torch.tensor([w, h, w, h])).numpy().astype(np.float64)
            xyxy = np.clip(xyxy, 0, [w, h, w, h])
            keep = (probs[b].max(-1).values > self.box_threshold).numpy()
            text, spans = prompts[b]
            tokens = self.token_phrases(text, spans, int(inputs["input_ids"].shape[1]))
            found: list[Detection] = []
            for name, pos in zip(names[i], tokens):
                if not pos:
                    continue
                phrase = probs[b][:, pos].max(-1).values.numpy()  # (queries,)
                ok = keep & (phrase > self.text_threshold)
                ok &= (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)
                if not ok.any():
                    continue
                q = int(np.argmax(np.where(ok, phrase, -1.0)))
                found.append(Detection(label=name, box=xyxy[q], score=float(phrase[q])))
            results[i] = self._distinct(found)
        return results

    def _distinct(self, found: list[Detection]) -> list[Detection]:
        kept: list[Detection] = []
        for d in sorted(found, key=lambda d: -d.score):
            if all(box_iou(d.box, k.box) <= self.same_box_iou for k in kept):
                kept.append(d)
        order = {id(d): n for n, d in enumerate(found)}
        return sorted(kept, key=lambda d: order[id(d)])
