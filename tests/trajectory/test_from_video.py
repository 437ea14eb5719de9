"""Trajectories from a reference video (issue 28). With the tiny random Grounding DINO and SAM 2 video
(perception/tiny.py via curation's save_tiny_models, saved and loaded back as model folders): the plumbing of frames, ids, shapes, the
direction of propagation and determinism on the real example video. On the real DAVIS annotations:
motion transfer (fit_motion) against the transformed truth. Bad input: exit 2 with one line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from magicmotion.cli import main
from magicmotion.perception.grounding import box_iou
from magicmotion.errors import TrajectoryError
from magicmotion.io import write_image
from magicmotion.trajectory import from_label_masks, from_mask_frames, load, mask_box, render, to_dict
from magicmotion.trajectory.from_video import (Prompt, fit_motion, fit_to_image, load_models, parse_box_prompt,
                                               parse_phrases, parse_point_prompt, read_reference,
                                               trajectory_from_video)

FRAMES = 6  # of the real example video (640x480)
REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-samples"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from magicmotion.data.curation.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def models(tiny):
    """(grounder with thresholds 0: a random model's boxes all pass, Sam2VideoTracker)."""
    return load_models(str(tiny["grounding"]), str(tiny["sam2"]), device="cpu", box_threshold=0.0,
                       text_threshold=0.0)


@pytest.fixture(scope="module")
def example(real_samples_dir):
    return read_reference(real_samples_dir / "example.mp4", num_frames=FRAMES)


@pytest.fixture(scope="module")
def real_samples_dir():
    """The real samples (module-scoped, unlike conftest's `real_samples`)."""
    if not REAL.is_dir():
        pytest.skip(f"real samples not found at {REAL.resolve()} (a user's clone without shared data)")
    return REAL


def test_parse_prompts():
    assert parse_phrases("Horse. the child; horse.") == ["horse", "child"]
    p = parse_point_prompt("10,20;30.5,40,3")
    assert p.frame == 3 and p.points.tolist() == [[10, 20], [30.5, 40]] and p.box is None
    b = parse_box_prompt("1,2,30,40")
    assert b.frame == 0 and b.box.tolist() == [1, 2, 30, 40]
    for bad, call in [("1,2,3", parse_box_prompt), ("1", parse_point_prompt), ("1,2,1;3,4,2", parse_point_prompt),
                      ("a,b", parse_point_prompt), ("1,2,3,4,0.5", parse_box_prompt)]:
        with pytest.raises(TrajectoryError):
            call(bad)


def test_reference_clip_frames(real_samples_dir):
    clip = read_reference(real_samples_dir / "example.mp4", start=2, num_frames=3, frame_step=4)
    full = read_reference(real_samples_dir / "example.mp4", num_frames=11)
    np.testing.assert_array_equal(clip, full[[2, 6, 10]])
    with pytest.raises(TrajectoryError, match="the reference has 117 frames, shorter than the 201 that"):
        read_reference(real_samples_dir / "example.mp4", num_frames=101, frame_step=2)


def test_tiny_models_frames_ids_shapes_direction_and_determinism(models, example, tiny, real_samples_dir):
    """Phrases found on frame 2: SAM 2 goes forwards 2..5, then backwards 1..0; the forward half is
    what tracking the clip from frame 2 alone gives; a second run with freshly loaded models is
    identical."""
    grounder, tracker = models
    seen = []
    traj = trajectory_from_video(real_samples_dir / "example.mp4", objects="cat. man.", frame=2,
                                 frames=example, grounder=grounder, tracker=tracker,
                                 progress=lambda f, done, total: seen.append((f, done, total)))
    assert seen == [(f, i + 1, FRAMES) for i, f in enumerate([2, 3, 4, 5, 1, 0])]
    assert (traj.width, traj.height, traj.num_frames) == (640, 480, FRAMES)
    assert traj.ids == [1, 2] and [o.label for o in traj.objects] == ["cat", "man"]
    for o in traj.objects:
        assert sorted(o.masks) == list(range(FRAMES)) and o.mask(0).shape == (480, 640)
        assert o.mask_area(2) > 0 and 2 in o.boxes
        for t in o.masks:
            assert (t in o.boxes) == (o.mask_area(t) > 0)
    # forwards from the prompt frame = the clip that starts there
    boxes = [np.asarray(d.box) for d in grounder([example[2]], [["cat", "man"]])[0]]
    forward = tracker.track(example[2:], [Prompt(frame=0, box=b) for b in boxes])
    for k, o in enumerate(traj.objects):
        for t in range(2, FRAMES):
            np.testing.assert_array_equal(o.mask(t), forward[k, t - 2])
    # no state kept between runs: fresh models, same spec
    again = trajectory_from_video(real_samples_dir / "example.mp4", objects=["cat", "man"], frame=2,
                                  num_frames=FRAMES, grounding=str(tiny["grounding"]), sam2=str(tiny["sam2"]),
                                  device="cpu", box_threshold=0.0, text_threshold=0.0)
    assert json.dumps(to_dict(again)) == json.dumps(to_dict(traj))
    render(traj, "mask")


def test_clicked_points_and_boxes_on_two_frames(models, example, real_samples_dir):
    """A point prompt on frame 0 and a box on frame 3: two sessions (6 + 6 frames), objects in the
    order given, and the box object's mask on frame 3 comes from its own prompt."""
    _, tracker = models
    seen = []
    traj = trajectory_from_video(real_samples_dir / "example.mp4", points=["320,240"],
                                 boxes=["50,50,600,400,3"], frames=example, tracker=tracker,
                                 progress=lambda f, d, t: seen.append(f))
    assert seen == [0, 1, 2, 3, 4, 5] + [3, 4, 5, 2, 1, 0]
    assert traj.ids == [1, 2] and all(o.label == "" for o in traj.objects)
    alone = tracker.track(example, [Prompt(frame=3, box=np.array([50, 50, 600, 400.0]))])
    np.testing.assert_array_equal(traj.object(2).mask(3), alone[0, 3])


def test_from_video_command_with_motion_transfer(tiny, real_samples_dir, tmp_path, capsys):
    """The whole command: phrases on frame 0, then the motion placed on a new 320x240 first frame with
    a box per object."""
    write_image(tmp_path / "new.png", np.full((240, 320, 3), 90, dtype=np.uint8))
    out = tmp_path / "spec.json"
    args = ["trajectory", "from-video", str(real_samples_dir / "example.mp4"), "--objects", "person. car.",
            "--num-frames", str(FRAMES), "--grounding", str(tiny["grounding"]), "--sam2", str(tiny["sam2"]),
            "--device", "cpu", "--box-threshold", "0", "--text-threshold", "0", "--out", str(out)]
    assert main(args + ["--fit-to", str(tmp_path / "new.png"), "--fit-box", "10,20,110,120",
                        "--fit-box", "200,100,300,200", "--caption", "two things move"]) == 0
    assert "wrote" in capsys.readouterr().out
    traj = load(out)
    assert traj.size == (320, 240) and traj.num_frames == FRAMES and traj.caption == "two things move"
    assert [o.label for o in traj.objects] == ["person", "car"]
    # boxes placed on whole pixels: measured 0; a pixel of rounding allowed
    np.testing.assert_allclose(traj.object(1).boxes[0], [10, 20, 110, 120], atol=1)
    np.testing.assert_allclose(traj.object(2).boxes[0], [200, 100, 300, 200], atol=1)
    # the same objects found by their names in the new first frame (any box, thresholds 0)
    assert main(args + ["--fit-to", str(tmp_path / "new.png")]) == 0
    assert load(out).size == (320, 240)


@pytest.mark.parametrize("extra, message", [
    (["--objects", "dog. ball."], "example.mp4 frame 0: no object found for 'ball' (Grounding DINO"),
    (["--objects", "person", "--num-frames", "200"], "example.mp4: the reference has 117 frames, shorter than the 200"),
    (["--objects", "person", "--frame", "9"], "example.mp4: frame 9 to find the objects on is outside the clip's"),
    (["--points", "700,10"], "example.mp4: point (700, 10) is outside the 640x480 frame"),
    (["--boxes", "10,10,50,50,7"], "is on frame 7, outside the clip's frames 0..5"),
    ([], "example.mp4: no objects: name them"),
    (["--points", "300,200;320,220"], "SAM 2 found no mask for object 1 (points 300,200;320,220) on frame 0"),
    (["--objects", "person", "--fit-to", "FIT", "--fit-box", "0,0,400,100"],
     "new.png: --fit-box 1 [0.0, 0.0, 400.0, 100.0] is outside the 320x240 image"),
    (["--objects", "person", "--fit-to", "FIT", "--fit-box", "0,0,40,100", "--fit-box", "1,1,9,9"],
     "new.png: 1 objects to place but 2 boxes given"),
    (["--points", "10,10", "--fit-to", "FIT"], "new.png: object 1 has no name to find it by"),
])
def test_bad_input_exits_2_with_one_line(tiny, real_samples_dir, tmp_path, capsys, extra, message):
    write_image(tmp_path / "new.png", np.zeros((240, 320, 3), dtype=np.uint8))
    extra = [str(tmp_path / "new.png") if a == "FIT" else a for a in extra]
    out = tmp_path / "spec.json"
    code = main(["trajectory", "from-video", str(real_samples_dir / "example.mp4"), "--num-frames",
                 str(FRAMES), *extra, "--grounding", str(tiny["grounding"]), "--sam2", str(tiny["sam2"]),
                 "--device", "cpu", "--box-threshold", "0", "--text-threshold", "0", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_missing_models_are_all_named_with_the_command_that_gets_each(real_samples_dir, tmp_path, capsys,
                                                                        monkeypatch):
    """Issue 38: without models, `--objects` named SAM 2 only; now every model the command needs is
    named in one line, each hub id with its `hf download`, a missing folder with its flag; points need
    no Grounding DINO. Nothing is loaded or written."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "spec.json"
    video = str(real_samples_dir / "example.mp4")
    assert main(["trajectory", "from-video", video, "--objects", "person.", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 models missing" in err[0], err
    for model in ("IDEA-Research/grounding-dino-base", "facebook/sam2.1-hiera-large"):
        assert f"(get it: hf download {model})" in err[0]
    assert "HF_HUB_OFFLINE is set" in err[0]
    assert main(["trajectory", "from-video", video, "--points", "10,10", "--sam2", str(tmp_path / "nope"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 model missing: SAM 2" in err[0] and "(check --sam2)" in err[0], err
    assert "Grounding DINO" not in err[0]
    assert not out.exists()


# ------------------------------------------------------------------- motion transfer, real masks


@pytest.fixture(scope="module")
def people(real_samples_dir):
    """The judo annotation as one moving object, "people": frames 0, 5, 8, 13 each show someone else
    (real masks that move across the frame and change shape)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 00005.png is a pixel narrower
        judo = from_mask_frames(real_samples_dir / "masks" / "judo", num_frames=16, fill="none")
    frames = sorted({t for o in judo.objects for t in o.masks})
    labels = np.stack([np.any([o.mask(t) for o in judo.objects], axis=0) for t in frames]).astype(np.int64)
    return from_label_masks(labels, frames=frames, num_frames=16, labels_by_id={1: "people"})


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("scale, shift, size", [(0.75, (40, 30), (720, 480)), (1.1, (-100, -15), (854, 480))])
def test_fit_motion_matches_the_transformed_truth(people, scale, shift, size):
    """The new first frame is the judo frame zoomed and moved; fitting the reference's frame-0 box onto
    the object's box there must give the truth under the same map on every annotated frame."""
    warp = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], dtype=np.float64)
    truth = {t: cv2.warpAffine(people.objects[0].mask(t).astype(np.uint8), warp, size,
                               flags=cv2.INTER_NEAREST).astype(bool) for t in people.objects[0].masks}
    fitted = fit_motion(people, size, [mask_box(truth[0])])
    o = fitted.object(1)
    assert fitted.size == size and o.label == "people" and sorted(o.masks) == sorted(truth)
    # the fitted map resamples real masks (nearest neighbour on both sides, different grids): Mask IoU
    # measured 0.92-1.0, Box IoU 0.96-1.0; the wrong variant, the map without its shift, measured 0-0.37
    unshifted = warp.copy()
    unshifted[:, 2] = 0
    wrong = []
    for t, m in truth.items():
        if m.sum() >= 1000:
            assert mask_iou(o.mask(t), m) >= 0.9, (t, mask_iou(o.mask(t), m))
            assert box_iou(o.boxes[t], mask_box(m)) >= 0.9, t
            w = cv2.warpAffine(people.objects[0].mask(t).astype(np.uint8), unshifted, size,
                               flags=cv2.INTER_NEAREST).astype(bool)
            wrong.append(mask_iou(o.mask(t), w))
        else:  # (nearly) moved out of the new frame: a sliver at most, or absent
            # a sliver (measured 26 px for 37): area within half of max(area, 100 px)
            assert abs(o.mask_area(t) - int(m.sum())) <= 0.5 * max(int(m.sum()), 100), t
            assert (t in o.boxes) == (o.mask_area(t) > 0)
    assert wrong and max(wrong) < 0.9, wrong
    render(fitted, "box")


def test_fit_motion_scales_x_and_y_apart(people):
    src = people.objects[0].boxes[0]
    target = np.array([100.0, 50.0, 100 + (src[2] - src[0]) / 2, 50 + (src[3] - src[1])])  # half as wide
    o = fit_motion(people, (854, 480), [target]).object(1)
    np.testing.assert_allclose(o.boxes[0], target, atol=1)  # whole pixels: measured 0
    b = people.objects[0].boxes[5]
    expect = [100 + (b[0] - src[0]) / 2, 50 + (b[1] - src[1]), 100 + (b[2] - src[0]) / 2, 50 + (b[3] - src[1])]
    expect = np.clip(expect, 0, [854, 480, 854, 480])
    assert box_iou(o.boxes[5], expect) >= 0.9  # resampled mask's box: measured 0.986


def test_fit_motion_refuses_bad_boxes_and_objects_absent_on_frame_0(people, models):
    with pytest.raises(TrajectoryError, match=r"first frame: box \[0.0, 0.0, 900.0, 10.0\] for object 1 is "
                                              r"outside the 854x480 image"):
        fit_motion(people, (854, 480), [[0, 0, 900, 10]])
    late = people.copy()
    late.objects[0].set_mask(0, np.zeros((480, 854), dtype=bool))
    late.objects[0].boxes.pop(0)
    with pytest.raises(TrajectoryError, match="object 1 \\(people\\) is not on frame 0 of the reference"):
        fit_motion(late, (854, 480), [[0, 0, 90, 10]])
    # by name with the tiny grounder: 'people' is not a word it knows, but thresholds 0 find a box
    grounder, _ = models
    fitted = fit_to_image(people, np.zeros((240, 320, 3), dtype=np.uint8), grounder=grounder)
    assert fitted.size == (320, 240) and 0 in fitted.object(1).boxes
