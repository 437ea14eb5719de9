"""The trajectory layer: specs of objects moving through a video, conversions between the dense
(mask) and sparse (box, sparse_box) kinds, rendering to trajectory maps, and reading maps back."""

from .decode import DecodedMaps, decode_maps, from_maps, load_maps
from .ops import (MAX_SPARSE_KEYS, fit_transform, interpolate_boxes, masks_to_boxes, rescale,
                  resize_crop, sparsify)
from .palette import PALETTE, PALETTES, get_palette, palette_color, palette_ids, palette_index
from .render import KINDS, box_thickness, draw_box, preview_frames, render
from .spec import (ObjectTrack, Trajectory, decode_mask, encode_mask, from_dict, from_label_masks,
                   from_mask_frames, load, mask_box, rle_box, save, to_dict)

__all__ = [
    "KINDS", "MAX_SPARSE_KEYS", "PALETTE", "PALETTES", "DecodedMaps", "ObjectTrack", "Trajectory",
    "box_thickness", "decode_mask", "decode_maps", "draw_box", "encode_mask", "fit_transform",
    "from_dict", "from_label_masks", "from_mask_frames", "from_maps", "get_palette",
    "interpolate_boxes", "load", "load_maps", "mask_box", "masks_to_boxes", "palette_color",
    "palette_ids", "palette_index", "preview_frames", "render", "rescale", "resize_crop", "rle_box",
    "save", "sparsify", "to_dict",
]
