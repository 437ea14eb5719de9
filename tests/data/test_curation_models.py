"""The real model code paths of curation with tiny random models built in code (no downloads): the
chat language model (parsing, validation, retries), Grounding DINO (thresholds, boxes) and SAM 2
video (masks through the clip), each also loaded back with from_pretrained from a saved folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicmotion.data.curation import (Detection, GroundingDinoGrounder, LanguageModelObjects,
                                       ObjectsAnswerError, Sam2Tracker, masks_to_trajectory,
                                       parse_objects, validate_objects)
from magicmotion.data.curation.grounding import prompt_for
from magicmotion.data.curation.tiny import (tiny_grounding_dino, tiny_language_model,
                                            tiny_sam2_video)
from magicmotion.errors import ModelError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (two threads spin against each other on a busy
    machine: 20x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- language model


@pytest.mark.parametrize("answer, expected", [
    ('{"objects": ["dog", "red car"]}', ["dog", "red car"]),
    ('Here you go:\n```json\n{"objects": ["The Brown  Dog.", "a ball", "brown dog"]}\n```', ["brown dog", "ball"]),
    ('["man", "surfboard"] are the objects', ["man", "surfboard"]),
    ('{"objects": ["a", "b", "c", "d", "e", "f", "g"]}', ["a", "b", "c", "d", "e"]),
])
def test_parse_objects_accepts_json_answers(answer, expected):
    assert parse_objects(answer, max_objects=5) == expected


@pytest.mark.parametrize("answer, reason", [
    ("", "empty answer"),
    ("The dog and the cat.", "no JSON"),
    ('{"objects": ["dog", ', "malformed JSON"),
    ('{"things": ["dog"]}', "without 'objects'"),
    ('{"objects": "dog"}', "must be a JSON list"),
    ('{"objects": [1, 2]}', "not a string"),
    ('{"objects": []}', "no objects"),
    ('{"objects": ["a dog that runs very fast across the green field"]}', "short noun phrase"),
])
def test_parse_objects_rejects_malformed_answers(answer, reason):
    with pytest.raises(ObjectsAnswerError, match=reason):
        parse_objects(answer)


def test_validate_objects_normalises_and_deduplicates():
    assert validate_objects([" The cat ", "cat", "Two Birds", ""], max_objects=3) == ["cat", "birds"]


@pytest.fixture(scope="module")
def tiny_llm():
    return tiny_language_model(seed=0)


def test_tiny_language_model_malformed_answers_are_retried_then_fail(tiny_llm, tmp_path):
    model, tok = tiny_llm
    finder = LanguageModelObjects(model, tok, retries=2, max_new_tokens=6)
    tries = []
    real = finder.generate

    def counted(captions, attempt=0):
        answers = real(captions, attempt)
        tries.append((attempt, len(captions), answers))
        return answers

    finder.generate = counted
    results = finder(["a red square moves left", "a dog runs", ""])
    # a random model never answers JSON: 1 + 2 tries for each caption, in batches of two
    assert [(a, n) for a, n, _ in tries] == [(0, 2), (1, 2), (2, 2)]
    assert all(isinstance(x, str) for _, _, answers in tries for x in answers)
    for r in results[:2]:
        assert r.objects is None and len(r.answers) == 3
        assert r.error.startswith("language model answer not valid after 3 tries:")
    assert results[2].error == "no caption to find objects in" and results[2].answers == []


def test_language_model_prompt_and_batched_generation(tiny_llm):
    model, tok = tiny_llm
    finder = LanguageModelObjects(model, tok, max_objects=3, max_new_tokens=4)
    msgs = finder.messages("a cat jumps")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "at most 3" in msgs[0]["content"] and msgs[-1]["content"] == "Caption: a cat jumps"
    # left padding: the greedy answer to a caption does not depend on its batch
    alone = finder.generate(["a cat jumps"])[0]
    batched = finder.generate(["a much longer caption about a cat that jumps high", "a cat jumps"])
    assert batched[1] == alone


def test_language_model_needs_a_chat_template(tiny_llm):
    from transformers import PreTrainedTokenizerFast

    model, tok = tiny_llm
    plain = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<|im_end|>")
    with pytest.raises(ModelError, match="no chat template"):
        LanguageModelObjects(model, plain)


def test_language_model_loads_from_a_saved_folder(tiny_llm, tmp_path):
    model, tok = tiny_llm
    model.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    finder = LanguageModelObjects.from_pretrained(str(tmp_path / "llm"), device="cpu",
                                                  max_new_tokens=4)
    assert type(finder.model).__name__ == "Qwen2ForCausalLM"
    assert finder.generate(["a cat"]) == LanguageModelObjects(model, tok, max_new_tokens=4).generate(["a cat"])
    with pytest.raises(ModelError, match="missing: language model folder not found"):
        LanguageModelObjects.from_pretrained(str(tmp_path / "missing"))


# ------------------------------------------------------------------------------------ grounding


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
        assert np.abs(kept - d.box).max(axis=1).min() < 1e-3
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


# ------------------------------------------------------------------------------------- tracking


@pytest.fixture(scope="module")
def tiny_sam2():
    return tiny_sam2_video(seed=0)


def test_sam2_tracks_boxes_through_the_clip(tiny_sam2):
    frames = np.random.default_rng(1).integers(0, 255, (3, 24, 40, 3), dtype=np.uint8)
    boxes = np.array([[2, 2, 20, 16], [18, 6, 38, 22]], dtype=np.float64)
    tracker = Sam2Tracker(tiny_sam2)  # no torchvision here: the built-in preprocessing
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
    a = Sam2Tracker(tiny_sam2)(frames, boxes)
    b = Sam2Tracker(tiny_sam2, processor)(frames, boxes)
    assert a.shape == b.shape and (a == b).mean() > 0.95


def test_sam2_loads_from_a_saved_folder(tiny_sam2, tmp_path):
    tiny_sam2.save_pretrained(tmp_path / "sam2")
    tracker = Sam2Tracker.from_pretrained(str(tmp_path / "sam2"))
    frames = np.random.default_rng(3).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    boxes = np.array([[1, 1, 9, 9.0]])
    np.testing.assert_array_equal(tracker(frames, boxes), Sam2Tracker(tiny_sam2)(frames, boxes))
    with pytest.raises(ModelError, match="missing: SAM 2 video model folder not found"):
        Sam2Tracker.from_pretrained(str(tmp_path / "missing"))


def test_masks_to_trajectory_drops_objects_absent_on_frame_0():
    masks = np.zeros((3, 4, 10, 12), dtype=bool)
    masks[0, :, 2:5, 3:7] = True
    masks[1, 1:, 0:2, 0:2] = True  # appears only later: dropped
    masks[2, 0, 6:9, 8:12] = True  # then lost
    traj = masks_to_trajectory(masks, ["cat", "dog", "ball"], caption="c")
    assert traj.ids == [1, 2] and [o.label for o in traj.objects] == ["cat", "ball"]
    cat, ball = traj.objects
    assert sorted(cat.masks) == sorted(ball.masks) == [0, 1, 2, 3]
    assert cat.boxes[3].tolist() == [3, 2, 7, 5]
    assert sorted(ball.boxes) == [0] and not ball.mask(2).any()
    traj.validate()


def test_detection_round_trip():
    d = Detection("dog", np.array([1.0, 2.0, 3.5, 4.25]), 0.875)
    e = Detection.from_dict(d.to_dict())
    assert e.label == "dog" and e.box.tolist() == [1.0, 2.0, 3.5, 4.25] and e.score == 0.875


# ------------------------------------------------------------------ the CLI with the tiny models


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """The three tiny models saved as folders; with seed 4 random SAM 2 finds a mask on the first
    frame for the clips below (seed 0 does for the bundled example only)."""
    from magicmotion.data.curation.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("models"), seed=4)


@pytest.fixture(scope="module")
def raw_list(tmp_path_factory):
    """One 12-frame synthetic video (32x32) and a CSV naming its objects."""
    from magicmotion.data.synthetic import SyntheticWorld
    from magicmotion.io import write_video

    root = tmp_path_factory.mktemp("raw")
    world = SyntheticWorld(size=(32, 32), num_frames=12, min_radius_px=5, max_objects=2)
    frames, _, caption, objects = world.sample(np.random.default_rng(4))
    write_video(root / "clip.mp4", frames, fps=8.0)
    names = "; ".join(o["label"] for o in objects)
    (root / "list.csv").write_text(f"video,caption,objects\nclip.mp4,{caption},{names}\n")
    return root / "list.csv"


def _curate_cli(raw_list, folders, out, *extra):
    from magicmotion.cli import main

    return main(["data", "curate", str(raw_list), "--out", str(out), "--llm", str(folders["llm"]),
                 "--grounding", str(folders["grounding"]), "--sam2", str(folders["sam2"]),
                 "--clip-frames", "4", "--frame-step", "2", "--device", "cpu", "--quiet", *extra])


def test_cli_curate_with_tiny_language_model_fails_clips_with_the_reason(raw_list, tiny_folders,
                                                                         tmp_path, capsys):
    # 12 frames: one clip of 4 frames at step 2 (7 frames); it fails, so the run curated nothing
    assert _curate_cli(raw_list, tiny_folders, tmp_path / "ds", "--llm-retries", "1") == 2
    err = capsys.readouterr().err
    assert "no clip curated" in err and "removed" in err
    assert "1 clip failed: clip-f000000 [objects]: language model answer not valid after 2 tries" in err
    assert not (tmp_path / "ds").exists()


def test_cli_curate_with_tiny_grounding_and_sam2(raw_list, tiny_folders, tmp_path, capsys):
    """Given objects, the real Grounding DINO and SAM 2 classes (random weights) run end to end:
    every clip is either written with its tracked objects or failed with a stage and reason."""
    from magicmotion.data.curation import MANIFEST, Manifest
    from magicmotion.data.dataset import Dataset, read_index

    out = tmp_path / "ds"
    code = _curate_cli(raw_list, tiny_folders, out, "--objects-from", "given",
                       "--box-threshold", "0", "--text-threshold", "0", "--clip-frames", "3")
    assert code == 0
    with Manifest(out / MANIFEST) as m:
        counts = m.counts()["clips"]
        failures = m.failures()
    records = read_index(out)
    assert counts["done"] == len(records) and counts["done"] + counts["failed"] == 2
    assert records  # with these seeds both clips are written
    for cid, stage, error in failures:
        assert stage == "tracking" and error == "no object has a mask on the first frame"
    for r in records:
        clip = Dataset(out, sampling="start").load_clip(r)
        assert clip.frames.shape == (3, 32, 32, 3) and r["fps"] == 4.0
        assert 1 <= len(clip.trajectory.objects) <= 2 and r["objects"]
        assert all(o.mask(0).any() for o in clip.trajectory.objects)


def test_models_loaded_for_curation_are_in_eval_mode(tiny_folders):
    from magicmotion.data.curation.stages import load_grounder, load_objects_model, load_tracker

    for model in (load_objects_model(str(tiny_folders["llm"]), "cpu").model,
                  load_grounder(str(tiny_folders["grounding"]), "cpu").model,
                  load_tracker(str(tiny_folders["sam2"]), "cpu").model):
        assert not [name for name, m in model.named_modules() if m.training]


def test_grounding_one_square_image(tiny_gd):
    """A batch of one square 64 px image: the last feature level is 1x1, which a GroupNorm with one
    channel per group rejects even in eval mode; the tiny model's d_model of 64 keeps two."""
    model, processor = tiny_gd
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    (found,) = GroundingDinoGrounder(model, processor, box_threshold=0.0, text_threshold=0.0)(
        [image], [["red square"]])
    assert [d.label for d in found] == ["red square"]


@pytest.mark.parametrize("size", [(64, 64), (32, 32)])
def test_bundled_example_curated_with_tiny_models(tiny_folders, tmp_path, size):
    """examples/source.mp4 (17 frames, 64x64) with its objects given, through the three tiny models
    at 64x64 and 32x32: the one clip is written with its tracked objects."""
    from pathlib import Path

    from magicmotion.data.curation import CurationConfig, curate
    from magicmotion.data.dataset import Dataset, read_index

    examples = Path(__file__).resolve().parents[2] / "examples"
    caption = (examples / "prompt.txt").read_text().strip()
    (tmp_path / "list.csv").write_text("video,caption,objects\n"
                                       f"{examples / 'source.mp4'},{caption},purple hexagon; pink triangle\n")
    cfg = CurationConfig(objects_from="given", llm=str(tiny_folders["llm"]),
                         grounding=str(tiny_folders["grounding"]), sam2=str(tiny_folders["sam2"]),
                         device="cpu", clip_frames=17, size=size, box_threshold=0.0,
                         text_threshold=0.0)
    summary = curate(tmp_path / "list.csv", tmp_path / "ds", cfg, progress=False)
    assert (summary.done, summary.failed, summary.failures) == (1, 0, [])
    (record,) = read_index(tmp_path / "ds")
    clip = Dataset(tmp_path / "ds", sampling="start").load_clip(record)
    assert clip.frames.shape == (17, size[1], size[0], 3)
    assert clip.trajectory.objects and all(o.mask(0).any() for o in clip.trajectory.objects)
