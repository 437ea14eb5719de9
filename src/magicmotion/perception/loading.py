"""Loading the perception models, once for every caller: a local folder or a hub id (fetched at the
user's site, `magicmotion.hub.resolve_pretrained`), on the device asked for (`auto` = CUDA when
present)."""

from __future__ import annotations

from .grounding import BOX_THRESHOLD, TEXT_THRESHOLD


def resolve_device(device: str | None) -> str:
    """"auto" / None / "" -> "cuda" when CUDA is available, else "cpu"; anything else as it is."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def load_grounder(name: str, device: str = "auto", box_threshold: float = BOX_THRESHOLD,
                  text_threshold: float = TEXT_THRESHOLD):
    """A `GroundingDinoGrounder` (open-vocabulary detection)."""
    from .grounding import GroundingDinoGrounder

    return GroundingDinoGrounder.from_pretrained(name, device=resolve_device(device),
                                                 box_threshold=box_threshold,
                                                 text_threshold=text_threshold)


def load_video_tracker(name: str, device: str = "auto"):
    """A `Sam2VideoTracker` (video segmentation and tracking)."""
    from .sam2_video import Sam2VideoTracker

    return Sam2VideoTracker.from_pretrained(name, device=resolve_device(device))


__all__ = ["load_grounder", "load_video_tracker", "resolve_device"]
