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


def load_pretrained(name: str, what: str, load, errors: type[Exception] | tuple = (OSError, ValueError)):
    """`load(where)` for a transformers model `name`, a local folder or a hub id, resolved with
    `magicmotion.hub.resolve_pretrained` and refused when its folder asks to run code (auto_map).
    Returns (where, what `load` returned).

    Args:
        what: names the model in messages ("Grounding DINO model", "SAM 2 video model").
        errors: what `load` may raise for a folder it cannot read; then ModelError
            "NAME: cannot load the WHAT (the first line of the reason)".
    """
    from ..errors import ModelError
    from ..hub import check_transformers_folder, resolve_pretrained

    where = str(resolve_pretrained(name, what))
    check_transformers_folder(where, what)  # no code from the folder (auto_map)
    try:
        return where, load(where)
    except errors as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{name}: cannot load the {what} ({first})") from None


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


__all__ = ["load_grounder", "load_pretrained", "load_video_tracker", "resolve_device"]
