"""The trajectory layer: specs of objects moving through a video, conversions between the dense
(mask) and sparse (box, sparse_box) kinds, rendering to trajectory maps, and reading maps back."""

from .decode import DecodedMaps, decode_maps, from_maps, load_maps
from .label_masks import from_label_masks, from_mask_frames
from .ops import (MAX_SPARSE_KEYS, fit_transform, frames_hint, interpolate_boxes, masks_to_boxes, rescale,
                  resize_crop, sparsify, with_num_frames)
from .palette import PALETTE, PALETTES, get_palette, palette_color, palette_ids, palette_index
from .render import KINDS, box_thickness, draw_box, preview_frames, render
from .spec import (ObjectTrack, Trajectory, decode_mask, encode_mask, from_dict, load, mask_box, rle_box, save,
                   to_dict)
from .tracks import PointTracks, load_tracks, tracks_to_trajectory, trajectory_from_tracks

# from_video imports perception's model wrappers: loaded on first use
_FROM_VIDEO = ("fit_motion", "fit_to_image", "trajectory_from_video")


def __getattr__(name):
    if name in _FROM_VIDEO:
        from . import from_video

        return getattr(from_video, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KINDS", "MAX_SPARSE_KEYS", "PALETTE", "PALETTES", "DecodedMaps", "ObjectTrack", "PointTracks",
    "Trajectory", "fit_motion", "fit_to_image", "load_tracks", "tracks_to_trajectory",
    "trajectory_from_tracks", "trajectory_from_video",
    "box_thickness", "decode_mask", "decode_maps", "draw_box", "encode_mask", "fit_transform",
    "from_dict", "from_label_masks", "from_mask_frames", "from_maps", "get_palette",
    "interpolate_boxes", "load", "load_maps", "mask_box", "masks_to_boxes", "palette_color",
    "palette_ids", "palette_index", "preview_frames", "render", "rescale", "resize_crop", "rle_box",
    "save", "sparsify", "to_dict", "frames_hint", "with_num_frames",
]
