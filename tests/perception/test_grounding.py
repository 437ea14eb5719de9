"""Open-vocabulary detection (perception.grounding): Grounding DINO with a tiny random model built in
code — thresholds, boxes against transformers' own post-processing, loading back a saved folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicmotion.perception import Detection, GroundingDinoGrounder, detect, normalise_name
from magicmotion.perception.grounding import prompt_for
from magicmotion.perception.tiny import tiny_grounding_dino


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_gd():
    return tiny_grounding_dino(seed=0)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
            rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)]


def test_prompt_spans():
    text, spans = prompt_for(["Red Square", "dog"])
    assert text == "red square. dog."
    assert [text[a:b] for a, b in spans] == ["red square", "dog"]


def test_grounding_dino_runs_and_applies_thresholds(tiny_gd):
    model, processor = tiny_gd
    images = _images()
    names = [["red square", "blue circle"], ["dog"]]
    everything = GroundingDinoGrounder(model, processor, box_threshold=0.0, text_threshold=0.0,
                                       same_box_iou=1.0)(images, names)
    assert [[d.label for d in ds] for ds in everything] == names
    for image, ds in zip(images, everything):
        h, w = image.shape[:2]
        for d in ds:
            assert d.box.shape == (4,) and 0 <= d.box[0] < d.box[2] <= w and 0 <= d.box[1] < d.box[3] <= h
            assert 0.0 < d.score <= 1.0
    nothing = GroundingDinoGrounder(model, processor, box_threshold=1.0)(images, names)
    assert nothing == [[], []]
    # a text threshold between the two scores of image 0 keeps only the better object
    s = sorted(d.score for d in everything[0])
    between = GroundingDinoGrounder(model, processor, box_threshold=0.0,
                                    text_threshold=(s[0] + s[1]) / 2, same_box_iou=1.0)(images, names)
    assert [d.score for d in between[0]] == [s[1]]
    # an image without names is skipped
    assert GroundingDinoGrounder(model, processor)(images, [[], []]) == [[], []]


def test_grounding_boxes_agree_with_transformers_post_processing(tiny_gd):
    """The chosen boxes are among those post_process_grounded_object_detection keeps with the same
    box threshold, and each phrase's score is its best token probability."""
    model, processor = tiny_gd
    image = _images()[0]
    grounder = GroundingDinoGrounder(model, processor, box_threshold=0.5, text_threshold=0.0,
                                     same_box_iou=1.0)
    found = grounder([image], [["red square", "dog"]])[0]
    inputs = processor(images=[image], text=["red square. dog."], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    post = processor.post_process_grounded_object_detection(
        out, inputs["input_ids"], threshold=0.5, text_threshold=0.0, target_sizes=[image.shape[:2]])[0]
    kept = post["boxes"].numpy()
    assert found
    for d in found:
        assert np.abs(kept - d.box).max(axis=1).min() < 1e-3  # the processor's own boxes: measured 0
        assert d.score <= float(post["scores"].max()) + 1e-6


def test_grounding_dino_loads_from_a_saved_folder(tiny_gd, tmp_path):
    model, processor = tiny_gd
    model.save_pretrained(tmp_path / "gd")
    processor.save_pretrained(tmp_path / "gd")
    loaded = GroundingDinoGrounder.from_pretrained(str(tmp_path / "gd"), box_threshold=0.0,
                                                   text_threshold=0.0)
    a = loaded(_images(), [["dog"], ["cat"]])
    b = GroundingDinoGrounder(model, processor, box_threshold=0.0, text_threshold=0.0)(
        _images(), [["dog"], ["cat"]])
    assert [[(d.label, d.box.tolist()) for d in x] for x in a] == \
        [[(d.label, d.box.tolist()) for d in x] for x in b]



def test_grounding_one_square_image(tiny_gd):
    """A batch of one square 64 px image: the last feature level is 1x1, which a GroupNorm with one
    channel per group rejects even in eval mode; the tiny model's d_model of 64 keeps two."""
    model, processor = tiny_gd
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    (found,) = GroundingDinoGrounder(model, processor, box_threshold=0.0, text_threshold=0.0)(
        [image], [["red square"]])
    assert [d.label for d in found] == ["red square"]



def test_detection_round_trip():
    d = Detection("dog", np.array([1.0, 2.0, 3.5, 4.25]), 0.875)
    e = Detection.from_dict(d.to_dict())
    assert e.label == "dog" and e.box.tolist() == [1.0, 2.0, 3.5, 4.25] and e.score == 0.875


def test_detect_takes_a_loaded_model_or_a_folder(tiny_gd, tmp_path):
    model, processor = tiny_gd
    model.save_pretrained(tmp_path / "gd")
    processor.save_pretrained(tmp_path / "gd")
    grounder = GroundingDinoGrounder(model, processor, box_threshold=0.0, text_threshold=0.0)
    images = _images()
    a = detect(images, [["dog"], ["cat"]], model=grounder)
    assert [[d.label for d in x] for x in a] == [["dog"], ["cat"]]
    b = detect(images, [["dog"], ["cat"]], model=tmp_path / "gd", device="cpu")  # default thresholds
    for x, y in zip(a, b):  # the same model: what the stricter thresholds keep is among a's boxes
        assert all(any(np.allclose(d.box, e.box) for e in x) for d in y)  # the same forward: measured 0


def test_normalise_name():
    assert normalise_name("  The Brown  dog.") == "brown dog"
    assert normalise_name("a red car") == "red car" and normalise_name("Cat") == "cat"
