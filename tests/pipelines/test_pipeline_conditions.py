"""The first frame and the trajectory maps are resized and cropped together (and tiny components)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicmotion.errors import PipelineError
from magicmotion.pipelines.conditions import maps_to_video_tensor, prepare_conditions, read_trajectory
from magicmotion.pipelines.tiny import tiny_tokenizer, tiny_wan_components
from magicmotion.trajectory import from_label_masks, palette_color, render, save


def labels_4x3() -> np.ndarray:
    """9 frames of 64x48 (4:3) with an off-centre object 1 moving right and object 2 near the edge."""
    labels = np.zeros((9, 48, 64), np.int32)
    for t in range(9):
        labels[t, 10:30, 20 + t:36 + t] = 1
        labels[t, 30:44, 50:60] = 2
    return labels


def silhouette(frame: np.ndarray, object_id: int) -> np.ndarray:
    """Pixels of one object's colour; an area-resized image's edge pixels (the colour blended with the
    black background) count when at least half covered."""
    color = np.array(palette_color(object_id), float)
    p = frame.astype(float)
    alpha = p @ color / (color @ color)
    return (alpha >= 0.5) & (np.abs(p - alpha[..., None] * color).max(axis=-1) < 8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def assert_aligned(a: np.ndarray, b: np.ndarray) -> None:
    """Same silhouette up to edge pixels: the area-resized image and nearest-resized masks may differ
    by a pixel at an edge; a wrong crop or a stretch moves object 2 (near the edge) by several."""
    if not b.any():  # cropped away in both
        assert not a.any()
        return
    assert iou(a, b) > 0.7  # measured 0.80-1.0 on these small silhouettes
    assert np.abs(centroid(a) - centroid(b)).max() < 1.25  # measured at most 1.0 px


@pytest.mark.parametrize("size", [(32, 32), (48, 32), (32, 48)])
def test_image_and_trajectory_stay_aligned(size):
    spec = from_label_masks(labels_4x3())
    maps = render(spec, "mask")
    image = maps[0]  # a first frame whose object pixels are exactly the frame-0 masks
    cond = prepare_conditions(image, spec, "mask", size)
    assert cond.image.shape == (size[1], size[0], 3) and cond.maps.shape == (9, size[1], size[0], 3)
    for object_id in (1, 2):
        assert_aligned(silhouette(cond.image, object_id), silhouette(cond.maps[0], object_id))
    # rendered maps given as pixels are cropped exactly like the spec
    from_pixels = prepare_conditions(image, maps, "mask", size)
    for t in (0, 8):
        for object_id in (1, 2):
            assert_aligned(silhouette(from_pixels.maps[t], object_id), silhouette(cond.maps[t], object_id))


def test_spec_path_video_path_and_tensor_are_read(tmp_path):
    from magicmotion.io import write_frames

    spec = from_label_masks(labels_4x3())
    save(spec, tmp_path / "spec.json")
    assert read_trajectory(tmp_path / "spec.json").size == (64, 48)
    write_frames(tmp_path / "maps", render(spec, "mask"))
    np.testing.assert_array_equal(read_trajectory(tmp_path / "maps"), render(spec, "mask"))
    t = torch.rand(9, 3, 32, 32)
    video = maps_to_video_tensor(t)
    assert video.shape == (1, 3, 9, 32, 32) and video.min() >= -1 and video.max() <= 1
    u8 = maps_to_video_tensor(np.full((9, 32, 32, 3), 255, np.uint8))
    assert torch.all(u8 == 1.0)


def test_condition_errors():
    spec = from_label_masks(labels_4x3())
    square = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(PipelineError, match="aspect ratios differ"):
        prepare_conditions(square, spec, "box", (32, 32))
    with pytest.raises(PipelineError, match="unknown kind"):
        prepare_conditions(square[:48], spec, "boxes", (32, 32))
    with pytest.raises(PipelineError, match="must be at the output size"):
        prepare_conditions(square, torch.rand(9, 3, 64, 64), "box", (32, 32))
    with pytest.raises(PipelineError, match="uint8"):
        read_trajectory(np.zeros((9, 32, 32, 3), np.float32))
    with pytest.raises(PipelineError, match="image"):
        prepare_conditions(np.zeros((64, 64), np.uint8), spec, "box", (32, 32))


def test_tiny_tokenizer_and_components_are_deterministic():
    tok = tiny_tokenizer(["red", "ball", "moves"])
    ids = tok("A red Ball, moves!")["input_ids"]
    vocab = tok.get_vocab()
    assert ids == [vocab["<unk>"], vocab["red"], vocab["ball"], vocab["<unk>"], vocab["moves"], vocab["<unk>"],
                   vocab["</s>"]]
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    a, b, c = tiny_wan_components(seed=0), tiny_wan_components(seed=0), tiny_wan_components(seed=1)
    for name in ("text_encoder", "vae", "transformer"):
        pa, pb, pc = (next(iter(x[name].parameters())) for x in (a, b, c))
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a["transformer"].config.in_channels == 36 and a["vae"].config.z_dim == 16
