"""Models: the Trajectory ControlNet (Wan2.1 and CogVideoX), the segment head and the joint model.

Names are imported lazily so that `magicmotion --help` (which imports `magicmotion.models.cli`) does
not import torch or diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "WanTrajectoryControlNet": "controlnet_wan",
    "CogVideoXTrajectoryControlNet": "controlnet_cogvideox",
    "cogvideox_rotary_embedding": "controlnet_cogvideox",
    "SegmentHead": "segment_head",
    "MagicMotionTransformer": "transformer",
    "MagicMotionTransformerOutput": "transformer",
    "load_official_checkpoint": "convert",
    "convert_official_checkpoint": "convert",
    "COGVIDEOX_5B_I2V_CONFIG": "convert",
    "tiny_wan_transformer": "tiny",
    "tiny_cogvideox_transformer": "tiny",
    "tiny_wan_inputs": "tiny",
    "tiny_cogvideox_inputs": "tiny",
}

__all__ = [
    "COGVIDEOX_5B_I2V_CONFIG",
    "CogVideoXTrajectoryControlNet",
    "MagicMotionTransformer",
    "MagicMotionTransformerOutput",
    "SegmentHead",
    "WanTrajectoryControlNet",
    "cogvideox_rotary_embedding",
    "convert_official_checkpoint",
    "load_official_checkpoint",
    "tiny_cogvideox_inputs",
    "tiny_cogvideox_transformer",
    "tiny_wan_inputs",
    "tiny_wan_transformer",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .controlnet_cogvideox import CogVideoXTrajectoryControlNet, cogvideox_rotary_embedding
    from .controlnet_wan import WanTrajectoryControlNet
    from .convert import COGVIDEOX_5B_I2V_CONFIG, convert_official_checkpoint, load_official_checkpoint
    from .segment_head import SegmentHead
    from .tiny import tiny_cogvideox_inputs, tiny_cogvideox_transformer, tiny_wan_inputs, tiny_wan_transformer
    from .transformer import MagicMotionTransformer, MagicMotionTransformerOutput

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
