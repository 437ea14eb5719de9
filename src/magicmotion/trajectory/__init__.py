"""The trajectory layer: specs of objects moving through a video, conversions between the dense
(mask) and sparse (box, sparse_box) kinds, and rendering to trajectory maps."""

from .ops import (MAX_SPARSE_KEYS, fit_transform, interpolate_boxes, masks_to_boxes, rescale,
                  resize_crop, sparsify)
from .palette import PALETTE, PALETTES, get_palette, palette_color, palette_ids, palette_index
from .render import KINDS, box_thickness, draw_box, preview_frames, render
from .spec import (ObjectTrack, Trajectory, decode_mask, encode_mask, from_dict, from_label_masks,
                   from_mask_frames, load, mask_box, rle_box, save, to_dict)

__all__ = [
    "KINDS", "MAX_SPARSE_KEYS", "PALETTE", "PALETTES", "ObjectTrack", "Trajectory", "box_thickness",
    "decode_mask", "draw_box", "encode_mask", "fit_transform", "from_dict", "from_label_masks",
    "from_mask_frames", "get_palette", "interpolate_boxes", "load", "mask_box", "masks_to_boxes", "palette_color",
    "palette_ids", "palette_index", "preview_frames", "render", "rescale", "resize_crop", "rle_box", "save",
    "sparsify", "to_dict",
]
