"""The app's "take the motion from a video" and "load point tracks" (issue 28): the library functions
with the tiny random Grounding DINO / SAM 2 on the real example video, and the handlers of a built app
(motion placed on the drawn box, preview and generate use the dense motion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio", reason="the app needs gradio: pip install 'magicmotion[app]'")

from magicmotion.app import motion as mo  # noqa: E402
from magicmotion.app.state import new_state  # noqa: E402
from magicmotion.app.ui import build_app  # noqa: E402
from magicmotion.errors import TrajectoryError  # noqa: E402
from magicmotion.trajectory import render  # noqa: E402


@pytest.fixture(scope="module")
def motion_models(tmp_path_factory):
    from magicmotion.data.curation.tiny import save_tiny_models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = save_tiny_models(tmp_path_factory.mktemp("tiny-models"))
    yield mo.MotionModels(grounding=str(paths["grounding"]), sam2=str(paths["sam2"]), device="cpu",
                          box_threshold=0.0, text_threshold=0.0)
    torch.set_num_threads(threads)


def test_motion_from_video_onto_a_first_frame(motion_models, real_samples, first_frame):
    image, _ = first_frame
    traj = mo.motion_from_video(real_samples / "example.mp4", "person. car.", image, motion_models,
                                fit_boxes=[[10, 10, 50, 50], [80, 20, 150, 100]], num_frames=5)
    assert traj.size == (160, 120) and traj.num_frames == 5 and traj.ids == [1, 2]
    np.testing.assert_allclose(traj.object(2).boxes[0], [80, 20, 150, 100], atol=1)  # whole pixels: measured 0
    cut = mo.motion_trajectory(traj, 5, "sparse_box", key_frames=[2, 4])
    assert sorted(cut.object(1).boxes) == [0, 2, 4] and sorted(cut.object(1).masks) == [0]
    with pytest.raises(TrajectoryError, match="the motion has 5 frames, fewer than the 9"):
        mo.motion_trajectory(traj, 9, "mask")
    with pytest.raises(TrajectoryError, match="name the objects"):
        mo.motion_from_video(real_samples / "example.mp4", " ", image, motion_models)


def test_app_takes_the_motion_and_loads_tracks(motion_models, real_samples, first_frame, tmp_path):
    calls = []

    def generate_fn(image, prompt, trajectory, kind, **settings):
        calls.append((trajectory, kind))
        maps = render(trajectory, kind, size=(32, 32))
        return maps, maps

    demo = build_app(generate_fn=generate_fn, output_dir=tmp_path / "out", examples_dirs=[],
                     motion_models=motion_models)
    fn = {f.name: f.fn for f in demo.fns.values()}
    image, _ = first_frame
    state = fn["on_upload"](image, new_state())[0]
    from magicmotion.io import read_video, write_video

    clip = tmp_path / "reference.mp4"  # the example's first 11 frames
    write_video(clip, read_video(real_samples / "example.mp4", max_frames=11)[0])
    out = fn["on_take_motion"](str(clip), "dog", state)
    state, kind, frames = out[0], out[4], out[5]
    assert kind["value"] == "mask" and frames["value"] == 9  # 11 frames: the Frames slider's 4k + 1
    assert state["motion"].num_frames == 11 and len(state["objects"]) == 1
    settings = ("mask", "arc", [], "a dog walks", 9, 2, 3, 1.0, 1.0, 2.5, 32, 32, 8)
    gif, files = fn["on_preview"](state, *settings)
    assert Path(gif).suffix == ".gif"
    fn["on_generate"](state, *settings)
    traj, kind = calls[-1]
    assert kind == "mask" and traj.num_frames == 9 and traj.size == (160, 120)
    assert all(sorted(o.masks) == list(range(9)) for o in traj.objects)
    # point tracks in the first frame's pixels
    tracks = tmp_path / "tracks.json"
    tracks.write_text(json.dumps({"width": 160, "height": 120, "objects": [
        {"id": 1, "label": "square", "tracks": [[[40 + 5 * t, 50] for t in range(13)]]}]}))
    out = fn["on_load_tracks"](str(tracks), state)
    state = out[0]
    assert out[4]["value"] == "box" and out[5]["value"] == 13 and state["motion"].num_frames == 13
    fn["on_generate"](state, "box", *settings[1:4], 13, *settings[5:])
    traj, kind = calls[-1]
    assert kind == "box" and traj.object(1).label == "square" and len(traj.object(1).boxes) == 13
