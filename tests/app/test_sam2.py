"""Point clicks -> mask through SAM 2 (transformers' Sam2Model), with a tiny random model built in code:
the preprocessing, the choice among the proposed masks, the upsampling and the loading path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicmotion.app.drawing import Sam2Segmenter
from magicmotion.errors import MagicMotionError, TrajectoryError


def tiny_sam2():
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2Model,
                              Sam2PromptEncoderConfig, Sam2VisionConfig)

    backbone = Sam2HieraDetConfig(hidden_size=12, image_size=128, blocks_per_stage=[1, 2, 7, 2],
                                  embed_dim_per_stage=[12, 24, 48, 96])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                              backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32)
    prompt = Sam2PromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=8)
    decoder = Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Sam2Model(Sam2Config(vision_config=vision, prompt_encoder_config=prompt,
                                    mask_decoder_config=decoder)).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_sam2()


def reference_mask(model, image, points, labels) -> np.ndarray:
    """SAM 2 run step by step: image resized to 128x128, ImageNet-normalised; points scaled to it;
    the proposal with the best predicted IoU, bilinearly upsampled, > 0."""
    import cv2
    import torch.nn.functional as F

    h, w = image.shape[:2]
    x = cv2.resize(image, (128, 128), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    pts = torch.tensor([[[[px * 128 / w, py * 128 / h] for px, py in points]]], dtype=torch.float32)
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(x).permute(2, 0, 1)[None], input_points=pts,
                    input_labels=torch.tensor([[labels]]), multimask_output=True)
    best = out.pred_masks[0, 0, int(out.iou_scores[0, 0].argmax())]
    return (F.interpolate(best[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0).numpy()


@pytest.mark.slow
def test_sam2_points_to_mask(model, first_frame, tmp_path):
    image, _ = first_frame
    seg = Sam2Segmenter(model)
    points, labels = [(50, 60), (120, 30)], [1, 0]
    mask = seg(image, points, labels)
    assert mask.shape == image.shape[:2] and mask.dtype == bool
    np.testing.assert_array_equal(mask, reference_mask(model, image, points, labels))
    # the image embedding is reused for more clicks on the same image
    cached = seg._cache[1]
    seg(image, points[:1], labels[:1])
    assert seg._cache[1] is cached
    np.testing.assert_array_equal(seg(image[:, ::-1].copy(), points, labels),
                                  reference_mask(model, image[:, ::-1].copy(), points, labels))
    # loading a saved model folder gives the same masks
    model.save_pretrained(tmp_path / "sam2")
    loaded = Sam2Segmenter.from_pretrained(str(tmp_path / "sam2"))
    np.testing.assert_array_equal(loaded(image, points, labels), mask)


def test_sam2_bad_input(model, first_frame, tmp_path):
    image, _ = first_frame
    seg = Sam2Segmenter(model)
    with pytest.raises(TrajectoryError, match="click at least one point"):
        seg(image, [], [])
    with pytest.raises(TrajectoryError, match="2 points but 1 labels"):
        seg(image, [(1, 1), (2, 2)], [1])
    with pytest.raises(MagicMotionError, match="SAM 2 model folder not found"):
        Sam2Segmenter.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MagicMotionError, match="cannot load a SAM 2 model"):
        Sam2Segmenter.from_pretrained(str(tmp_path / "empty"))


@pytest.mark.slow
def test_point_clicks_in_the_app(model, first_frame, tmp_path):
    """With SAM 2 given, point clicks in the app segment the selected object, on-object and background
    points alike, and the mask is SAM 2's for all the points so far."""
    gr = pytest.importorskip("gradio", reason="the app needs gradio: pip install 'magicmotion[app]'")
    from magicmotion.app.canvas import canvas_zoom
    from magicmotion.app.ui import build_app, new_state

    image, _ = first_frame
    seg = Sam2Segmenter(model)
    demo = build_app(sam2=seg, generate_fn=lambda *a, **k: None, output_dir=tmp_path, examples_dirs=[])
    fn = {f.name: f.fn for f in demo.fns.values()}
    k = canvas_zoom((image.shape[1], image.shape[0]))
    state = fn["on_upload"](image, new_state())[0]
    for (x, y), label in [((50, 60), "On the object"), ((120, 30), "Background")]:
        evt = gr.SelectData(None, {"index": [x * k, y * k], "value": None})
        state = fn["on_click"]("Points (SAM 2)", label, state, evt)[0]
    (o,) = state["objects"]
    assert o.points == [(50, 60), (120, 30)] and o.point_labels == [1, 0] and o.box is None
    expected = reference_mask(model, image, o.points, o.point_labels)
    if expected.any():
        np.testing.assert_array_equal(o.mask, expected)
    else:  # nothing found (random weights): a warning in the page, no mask
        assert o.mask is None
