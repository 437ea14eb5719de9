"""Video segmentation and tracking (perception.sam2_video): SAM 2 video with a tiny random model built
in code, prompted with boxes, points and masks, and loaded back from a saved folder."""

from __future__ import annotations

import numpy as np
import pytest

from magicmotion.errors import ModelError
from magicmotion.perception import Prompt, Sam2VideoTracker, track
from magicmotion.perception.tiny import tiny_sam2_video


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_sam2():
    return tiny_sam2_video(seed=0)


def test_sam2_tracks_boxes_through_the_clip(tiny_sam2):
    frames = np.random.default_rng(1).integers(0, 255, (3, 24, 40, 3), dtype=np.uint8)
    boxes = np.array([[2, 2, 20, 16], [18, 6, 38, 22]], dtype=np.float64)
    tracker = Sam2VideoTracker(tiny_sam2)  # no torchvision here: the built-in preprocessing
    masks = tracker(frames, boxes)
    assert masks.shape == (2, 3, 24, 40) and masks.dtype == bool
    again = tracker(frames, boxes)
    np.testing.assert_array_equal(masks, again)  # deterministic
    assert tracker(frames, np.zeros((0, 4))).shape == (0, 3, 24, 40)
    # the box prompt matters: another box gives another first-frame mask
    other = tracker(frames, np.array([[30, 0, 40, 6.0]]))
    assert not np.array_equal(other[0], masks[0])


def test_sam2_processor_path_matches_builtin_preprocessing(tiny_sam2):
    """Where torchvision is installed, Sam2VideoProcessor is used; both paths give the same masks."""
    pytest.importorskip("torchvision", reason="Sam2VideoProcessor needs torchvision")
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    size = {"height": 32, "width": 32}
    processor = Sam2VideoProcessor(image_processor=Sam2ImageProcessor(size=size),
                                   video_processor=Sam2VideoVideoProcessor(size=size), target_size=32)
    frames = np.random.default_rng(2).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    boxes = np.array([[4, 4, 20, 20.0]])
    a = Sam2VideoTracker(tiny_sam2)(frames, boxes)
    b = Sam2VideoTracker(tiny_sam2, processor)(frames, boxes)
    # two resizes of the prompt and frames may flip pixels at mask edges; not measured here (this test
    # needs torchvision, absent on this machine): 0.95 is a guess, not a calibrated bound
    assert a.shape == b.shape and (a == b).mean() > 0.95


def test_sam2_loads_from_a_saved_folder(tiny_sam2, tmp_path):
    tiny_sam2.save_pretrained(tmp_path / "sam2")
    tracker = Sam2VideoTracker.from_pretrained(str(tmp_path / "sam2"))
    frames = np.random.default_rng(3).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    boxes = np.array([[1, 1, 9, 9.0]])
    np.testing.assert_array_equal(tracker(frames, boxes), Sam2VideoTracker(tiny_sam2)(frames, boxes))
    with pytest.raises(ModelError, match="missing: SAM 2 video model folder not found"):
        Sam2VideoTracker.from_pretrained(str(tmp_path / "missing"))



def test_box_prompts_and_the_call_form_agree(tiny_sam2):
    """Curation's call form (boxes on frame 0) is track() with box prompts on frame 0."""
    frames = np.random.default_rng(4).integers(0, 255, (3, 24, 32, 3), dtype=np.uint8)
    boxes = np.array([[2, 2, 14, 12], [16, 8, 30, 22]], dtype=np.float64)
    tracker = Sam2VideoTracker(tiny_sam2)
    np.testing.assert_array_equal(tracker(frames, boxes), track(frames, [Prompt(box=b) for b in boxes],
                                                                model=tracker))


def test_mask_prompts_differ_by_mask_and_cover_every_frame(tiny_sam2):
    frames = np.random.default_rng(5).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    a = np.zeros((32, 32), bool)
    a[2:14, 2:14] = True
    b = np.zeros((32, 32), bool)
    b[18:30, 16:30] = True
    tracker = Sam2VideoTracker(tiny_sam2)
    masks = tracker.track(frames, [Prompt(mask=a), Prompt(mask=b)])
    assert masks.shape == (2, 3, 32, 32) and masks.dtype == bool
    swapped = tracker.track(frames, [Prompt(mask=b), Prompt(mask=a)])
    np.testing.assert_array_equal(swapped[::-1], masks)  # each object keeps its own prompt's masks


def test_a_prompt_on_a_later_frame_is_tracked_both_ways(tiny_sam2):
    frames = np.random.default_rng(6).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    calls = []
    tracker = Sam2VideoTracker(tiny_sam2)
    masks = tracker.track(frames, [Prompt(frame=2, points=np.array([[10.0, 12.0]]))],
                          progress=lambda f, done, total: calls.append((f, done, total)))
    assert masks.shape == (1, 4, 32, 32)
    assert sorted(f for f, _, _ in calls) == [0, 1, 2, 3]  # forwards from 2, then back to 0
    assert [f for f, _, _ in calls][:2] == [2, 3] and calls[-1][1] == 4


def test_folder_mean_and_std_are_used(tiny_sam2, tmp_path):
    """A folder's preprocessor_config.json mean/std reach the built-in preprocessing."""
    import json

    tiny_sam2.save_pretrained(tmp_path / "sam2")
    (tmp_path / "sam2" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3,
                                                                              "image_std": [0.25] * 3}))
    tracker = Sam2VideoTracker.from_pretrained(str(tmp_path / "sam2"))
    assert tracker.image_mean == (0.5, 0.5, 0.5) and tracker.image_std == (0.25, 0.25, 0.25)
    (tmp_path / "sam2" / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="malformed JSON"):
        Sam2VideoTracker.from_pretrained(str(tmp_path / "sam2"))
