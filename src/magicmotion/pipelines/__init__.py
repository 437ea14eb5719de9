"""Inference: MagicMotion pipelines for Wan2.1 and CogVideoX image-to-video, loading, and `generate`.

Names are imported lazily so that `magicmotion --help` (which imports `magicmotion.pipelines.cli`)
does not import torch or diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# `generate` is both a module and the function in it. The module (light: numpy only) is imported here
# and the name rebound to the function, so that `from magicmotion.pipelines import generate` always
# gives the function (importing a submodule later would otherwise rebind the name to the module).
from . import generate as _generate_module  # noqa: E402

generate = _generate_module.generate

_EXPORTS = {
    "MagicMotionWanPipeline": "pipeline_wan",
    "wan_trajectory_latents": "pipeline_wan",
    "MagicMotionCogVideoXPipeline": "pipeline_cogvideox",
    "cogvideox_trajectory_latents": "pipeline_cogvideox",
    "MagicMotionPipelineOutput": "conditions",
    "prepare_conditions": "conditions",
    "load_pipeline": "loading",
    "load_controlnet": "loading",
    "TINY_MODEL_DIR": "loading",
    "KIND_STAGE": "loading",
    "write_outputs": "generate",
    "tiny_wan_components": "tiny",
    "tiny_cogvideox_components": "tiny",
    "tiny_tokenizer": "tiny",
}

__all__ = sorted([*_EXPORTS, "generate"])

if TYPE_CHECKING:  # pragma: no cover
    from .conditions import MagicMotionPipelineOutput, prepare_conditions
    from .generate import write_outputs
    from .loading import KIND_STAGE, TINY_MODEL_DIR, load_controlnet, load_pipeline
    from .pipeline_cogvideox import MagicMotionCogVideoXPipeline, cogvideox_trajectory_latents
    from .pipeline_wan import MagicMotionWanPipeline, wan_trajectory_latents
    from .tiny import tiny_cogvideox_components, tiny_tokenizer, tiny_wan_components

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
