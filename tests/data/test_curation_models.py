"""The real model code paths of curation with tiny random models built in code (no downloads): the
chat language model (parsing, validation, retries, loaded back from a saved folder) and the whole
curation with perception's tiny Grounding DINO and SAM 2 (their own tests: tests/perception/)."""

from __future__ import annotations

import numpy as np
import pytest

from magicmotion.data.curation import (LanguageModelObjects, ObjectsAnswerError, masks_to_trajectory,
                                       parse_objects, validate_objects)
from magicmotion.data.curation.tiny import tiny_language_model
from magicmotion.errors import ModelError


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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


# ---------------------------------------------------------------------------- masks to a trajectory


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
    from magicmotion.data.dataset import read_index
    from magicmotion.data.reader import Dataset

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
    from magicmotion.data.curation.stages import load_objects_model
    from magicmotion.perception import load_grounder, load_video_tracker

    for model in (load_objects_model(str(tiny_folders["llm"]), "cpu").model,
                  load_grounder(str(tiny_folders["grounding"]), "cpu").model,
                  load_video_tracker(str(tiny_folders["sam2"]), "cpu").model):
        assert not [name for name, m in model.named_modules() if m.training]


@pytest.mark.parametrize("size", [(64, 64), (32, 32)])
def test_bundled_example_curated_with_tiny_models(tiny_folders, tmp_path, size):
    """examples/source.mp4 (17 frames, 64x64) with its objects given, through the three tiny models
    at 64x64 and 32x32: the one clip is written with its tracked objects."""
    from pathlib import Path

    from magicmotion.data.curation import CurationConfig, curate
    from magicmotion.data.dataset import read_index
    from magicmotion.data.reader import Dataset

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
