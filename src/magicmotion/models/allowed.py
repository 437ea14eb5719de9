"""What a model folder may name: the libraries and classes loaded for each component.

diffusers imports whatever module a `model_index.json` names (`"scheduler": ["mm_evil", "X"]` runs
`import mm_evil`), and a `config.json`'s `_class_name` picks the class. Every model folder we load
(bases, ControlNets, segment heads, curation models) is checked here first, before any import, so a
folder from elsewhere can only ever load the classes below; anything else is a ModelError (exit 2).
"""

from __future__ import annotations

import os
import re

from ..errors import ModelError

LIBRARIES = ("diffusers", "transformers")

# pipeline component -> (library, allowed class names or a pattern)
_TOKENIZER = re.compile(r"[A-Za-z0-9]*(Tokenizer|TokenizerFast|TokenizersBackend)")
COMPONENTS: dict[str, tuple[str, tuple[str, ...] | re.Pattern]] = {
    "transformer": ("diffusers", ("WanTransformer3DModel", "CogVideoXTransformer3DModel")),
    "transformer_2": ("diffusers", ("WanTransformer3DModel",)),
    "vae": ("diffusers", ("AutoencoderKLWan", "AutoencoderKLCogVideoX")),
    "scheduler": ("diffusers", re.compile(r"[A-Za-z0-9]+Scheduler")),
    "text_encoder": ("transformers", ("UMT5EncoderModel", "T5EncoderModel")),
    "tokenizer": ("transformers", _TOKENIZER),
    "image_encoder": ("transformers", ("CLIPVisionModel", "CLIPVisionModelWithProjection")),
    # transformers 5 without torchvision saves its CLIPImageProcessor as CLIPImageProcessorPil
    "image_processor": ("transformers", ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil")),
    "controlnet": ("magicmotion", ("WanTrajectoryControlNet", "CogVideoXTrajectoryControlNet")),
    "controlnet_2": ("magicmotion", ("WanTrajectoryControlNet",)),  # Wan2.2 A14B: the low-noise expert's
    "segment_head": ("magicmotion", ("SegmentHead",)),
}
PIPELINES = re.compile(r"(MagicMotion)?(Wan|CogVideoX)[A-Za-z0-9]*Pipeline")

# a model folder's config.json `_class_name` by what we load it as
CONFIG_CLASSES = {
    "ControlNet": ("WanTrajectoryControlNet", "CogVideoXTrajectoryControlNet"),
    "segment head": ("SegmentHead",),
}


def _allowed(name, allowed) -> bool:
    if not isinstance(name, str):
        return False
    if isinstance(allowed, re.Pattern):
        return allowed.fullmatch(name) is not None
    return name in allowed


def check_model_index(index, where: str | os.PathLike) -> dict:
    """A pipeline's `model_index.json` (parsed) -> itself, when its pipeline class and every
    component's (library, class) are ones we load; else ModelError naming the folder and component.
    Entries that are [null, null] (an absent optional component) and plain settings pass."""
    if not isinstance(index, dict):
        raise ModelError(f"{where}: model_index.json must be a JSON object")
    name = index.get("_class_name")
    if name is not None and not isinstance(name, str):  # [module, class]: diffusers' custom pipeline code
        raise ModelError(f"{where}: model_index.json: _class_name {name!r} asks for custom pipeline code; refused")
    for key, entry in index.items():
        if key.startswith("_") or not isinstance(entry, (list, tuple)):
            continue  # settings such as "boundary_ratio": null
        if len(entry) != 2:
            raise ModelError(f"{where}: model_index.json: component {key!r} must be [library, class]")
        library, cls = entry
        if library is None and cls is None:
            continue
        if key not in COMPONENTS:
            raise ModelError(f"{where}: model_index.json names an unknown component {key!r} "
                             f"({library}.{cls}); the components we load are {', '.join(COMPONENTS)}")
        want_library, classes = COMPONENTS[key]
        ok_library = library == want_library or (
            want_library == "magicmotion" and isinstance(library, str)
            and (library == "magicmotion" or library.startswith("magicmotion.")))
        if not ok_library or not _allowed(cls, classes):
            raise ModelError(f"{where}: model_index.json: component {key!r} is {library!r}.{cls!r}; only "
                             f"{want_library} classes we expect are loaded (not imported: refused)")
        if library in LIBRARIES and not _library_has(library, cls):  # a name the pattern lets through
            raise ModelError(f"{where}: model_index.json: component {key!r} names {library}.{cls}, a class "
                             f"{library} does not have (a misspelt or made-up name; this {library} is "
                             f"{_version(library)})")
    return index


def _library_has(library: str, name: str) -> bool:
    """Whether diffusers / transformers has a class `name` (their lazy modules import only it)."""
    import importlib

    try:
        return isinstance(getattr(importlib.import_module(library), name), type)
    except (AttributeError, ImportError, RuntimeError):
        return False


def _version(library: str) -> str:
    import importlib

    return getattr(importlib.import_module(library), "__version__", "?")


def check_model_config(config, where: str | os.PathLike, what: str) -> str:
    """A `config.json` (parsed) of a `what` ("ControlNet", "segment head") -> its `_class_name`,
    when it is one we load; else ModelError."""
    name = config.get("_class_name") if isinstance(config, dict) else None
    if not _allowed(name, CONFIG_CLASSES[what]):
        raise ModelError(f"{where}: {name or 'this model'} is not a {what} we load "
                         f"({', '.join(CONFIG_CLASSES[what])})")
    return name


