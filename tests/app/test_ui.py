"""The app's event handlers called directly (no browser): the flows the browser test does not drive
(examples, loading a spec, object list, scales, SAM 2 missing, errors) and the `magicmotion app`
command."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the app needs gradio: pip install 'magicmotion[app]'")

from magicmotion.app import drawing as dr  # noqa: E402
from magicmotion.app.canvas import canvas_zoom  # noqa: E402
from magicmotion.app.state import find_examples, fit_area, new_state  # noqa: E402
from magicmotion.app.ui import build_app  # noqa: E402
from magicmotion.cli import build_parser  # noqa: E402
from magicmotion.errors import PipelineError  # noqa: E402
from magicmotion.io import read_video  # noqa: E402
from magicmotion.trajectory import from_dict, render  # noqa: E402

W, H = 160, 120
ZOOM = canvas_zoom((W, H))
SETTINGS = ("box", "arc", [], "a red square moves", 9, 2, 3, 1.0, 1.0, 2.5, 32, 32, 8)  # kind .. fps


class Recorder:
    """A generate function that records its call and returns the maps (at 32x32) as the 'video'."""

    def __init__(self, error: Exception | None = None):
        self.calls, self.error = [], error

    def __call__(self, image, prompt, trajectory, kind, **settings):
        self.calls.append((image, prompt, trajectory, kind, settings))
        if self.error:
            raise self.error
        maps = render(trajectory, kind, size=(settings["width"], settings["height"]))
        return maps // 2 + 60, maps


def handlers(demo) -> dict:
    return {f.name: f.fn for f in demo.fns.values()}


def select(x, y) -> gr.SelectData:
    """A click on frame point (x, y): the drawing shows the frame enlarged ZOOM times."""
    return gr.SelectData(None, {"index": [x * ZOOM, y * ZOOM], "value": None})


@pytest.fixture
def app(first_frame, tmp_path):
    """(handlers, recorder, state with the first frame uploaded)."""
    rec = Recorder()
    demo = build_app(generate_fn=rec, output_dir=tmp_path / "out", examples_dirs=[])
    fn = handlers(demo)
    image, _ = first_frame
    state = fn["on_upload"](image, new_state())[0]
    return fn, rec, state


def draw_square(fn, state):
    """A box around the red square, then a path of two points."""
    for x, y in [(25, 35), (75, 85)]:
        state = fn["on_click"]("Box", None, state, select(x, y))[0]
    for x, y in [(100, 60), (130, 90)]:
        state = fn["on_click"]("Path", None, state, select(x, y))[0]
    return state


def test_clicks_preview_and_generate(app, first_frame, tmp_path):
    fn, rec, state = app
    image, masks = first_frame
    state = draw_square(fn, state)
    (o,) = state["objects"]
    assert o.box.tolist() == [25, 35, 75, 85] and o.path == [(100, 60), (130, 90)]
    assert ((o.mask & masks["square"]).sum() / (o.mask | masks["square"]).sum()) > 0.95  # GrabCut: measured 1.0
    state = fn["on_set_scale"](1, 2.0, state)[0]
    assert o.scales == {1: 2.0}

    gif, files = fn["on_preview"](state, *SETTINGS)
    assert Path(gif).suffix == ".gif" and Image.open(gif).n_frames == 9
    assert Image.open(gif).size == (3 * W, 3 * H)  # issue 38: enlarged to about 512 (160x120 x3), not tiny
    spec = json.loads(Path(files[0]).read_text())
    assert spec["drawing"]["objects"][0]["scales"] == {"1": 2.0}

    video, files = fn["on_generate"](state, *SETTINGS)
    (image_in, prompt, traj, kind, settings), = rec.calls
    np.testing.assert_array_equal(image_in, image)
    assert (prompt, kind) == ("a red square moves", "box")
    assert settings == {"num_inference_steps": 2, "seed": 3, "guidance_scale": 1.0,
                        "controlnet_conditioning_scale": 1.0, "trajectory_guidance_scale": 2.5,
                        "width": 32, "height": 32}
    expected = dr.build_trajectory(state["objects"], (W, H), 9, "box", caption="a red square moves")
    assert dr.to_dict(traj) == dr.to_dict(expected)
    # shown: the 32x32 video enlarged 16 times, then an 8-pixel white gap, then the same with the trajectory
    shown, _ = read_video(video)
    assert shown.shape == (9, 512, 2 * 512 + 8, 3)
    names = sorted(Path(f).name for f in files)
    assert names == ["trajectory.json", "video.mp4", "video.preview.gif"]
    frames, _ = read_video(next(f for f in files if f.endswith("video.mp4")))
    assert frames.shape == (9, 32, 32, 3)
    # block centres read back: left is the video (each pixel a 16x16 block), right the video with the
    # trajectory over it (H.264 rounding: within 12 levels on average, where the drawn trajectory is
    # further off than that: its blend moves a pixel by 0.6 x (map - frame))
    left = shown[:, 8::16, 8:512:16].astype(int)
    right = shown[:, 8::16, 520 + 8::16].astype(int)
    drawn = render(traj, "box", size=(32, 32)).any(-1)
    assert np.abs(left - frames.astype(int)).mean() < 12
    assert shown[:, :, 512:520].min() > 200  # the white gap
    assert np.abs(right[~drawn] - frames[~drawn].astype(int)).mean() < 12  # unchanged where no trajectory
    assert np.abs(right[drawn] - frames[drawn].astype(int)).mean() > 12  # the trajectory drawn over it
    saved = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    assert dr.to_dict(from_dict(saved)) == dr.to_dict(expected)
    # width and height 0: the tiny model's area in the frame's shape (160x120 -> 64x48)
    fn["on_generate"](state, *SETTINGS[:10], 0, 0, 8)
    assert (rec.calls[-1][4]["width"], rec.calls[-1][4]["height"]) == (64, 48)


# as `generate` (issue 38): the frame's aspect kept within 64x64 pixels, 8 pixels a step
@pytest.mark.parametrize("size, expected", [((320, 240), (64, 48)), ((64, 64), (64, 64)), ((854, 480), (72, 40)),
                                            ((480, 854), (40, 72)), ((720, 480), (72, 48))])
def test_fit_area(size, expected):
    assert fit_area(size, 64 * 64) == expected


def test_objects_add_rename_remove_and_undo(app):
    fn, _, state = app
    state = draw_square(fn, state)
    state, _, objects, summary, name = fn["on_add"]("disc", state)
    assert [o.id for o in state["objects"]] == [1, 2] and state["current"] == 2 and name == ""
    assert objects["choices"] == [("1", "1"), ("2: disc", "2: disc")] or objects["choices"] == ["1", "2: disc"]
    state = fn["on_rename"]("blue disc", state)[0]
    assert state["objects"][1].label == "blue disc"
    state = fn["on_select_object"]("1", state)[0]
    assert state["current"] == 1
    state = fn["on_undo_path"](state)[0]
    assert state["objects"][0].path == [(100, 60)]
    state = fn["on_clear_path"](state)[0]
    assert state["objects"][0].path == []
    state = fn["on_remove"](state)[0]
    assert [o.id for o in state["objects"]] == [2] and state["current"] == 2
    with pytest.raises(gr.Error, match=r"object 2 \(blue disc\) has no mask"):
        fn["on_preview"](state, *SETTINGS)


@pytest.mark.parametrize("call, message", [
    (lambda fn, s: fn["on_click"]("Points (SAM 2)", "On the object", s, select(10, 10)), "point clicks need SAM 2"),
    (lambda fn, s: fn["on_click"]("Path", None, s, select(10, 10)), "has no mask yet: drag a box"),
    (lambda fn, s: fn["on_set_scale"](0, 2.0, s), "has no path points yet"),
    (lambda fn, s: fn["on_preview"](new_state(), *SETTINGS), "no first frame"),
    (lambda fn, s: fn["on_generate"](fn["on_remove"](s)[0], *SETTINGS), "no objects: add an object"),
    (lambda fn, s: fn["on_preview"](s, "box", "arc", [], "", 10, 2, 0, 1.0, 1.0, 1.0, 32, 32, 8), "frames must be 4k"),
    (lambda fn, s: fn["on_load_spec"](None, s), "no spec file"),
])
def test_bad_input_is_a_message(app, call, message):
    fn, _, state = app
    with pytest.raises(gr.Error, match=message) as info:
        call(fn, state)
    assert "Traceback" not in str(info.value)


def test_generation_errors_are_messages(first_frame, tmp_path):
    image, _ = first_frame
    for error, message in [(PipelineError("height must be a multiple of 16"), "height must be a multiple of 16"),
                           (RuntimeError("CUDA out of memory"),
                            "internal error (RuntimeError: CUDA out of memory); see the server log")]:
        fn = handlers(build_app(generate_fn=Recorder(error), output_dir=tmp_path, examples_dirs=[]))
        state = draw_square(fn, fn["on_upload"](image, new_state())[0])
        with pytest.raises(gr.Error) as info:
            fn["on_generate"](state, *SETTINGS)
        assert info.value.message == message


def test_oversized_upload_is_a_message(app):
    fn, _, _ = app
    with pytest.raises(gr.Error, match="5000x10 is too large"):
        fn["on_upload"](np.zeros((10, 5000, 3), np.uint8), new_state())


def test_load_spec_for_editing(app, tmp_path):
    fn, _, state = app
    state = fn["on_set_scale"](2, 0.5, draw_square(fn, state))[0]
    gif, files = fn["on_preview"](state, "sparse_box", "time", [4], "", 9, 2, 11, 1.0, 1.0, 1.75, 32, 32, 8)
    spec_path = next(f for f in files if f.endswith(".json"))
    fresh = fn["on_upload"](state["image"], new_state())[0]
    out = fn["on_load_spec"](spec_path, fresh)
    loaded = out[0]
    (o,) = loaded["objects"]
    assert o.path == state["objects"][0].path and o.scales == {2: 0.5}
    np.testing.assert_array_equal(o.mask, state["objects"][0].mask)
    kind, timing, frames, keys, prompt, *settings = out[4:]
    assert (kind["value"], timing["value"], frames["value"], keys["value"]) == ("sparse_box", "time", 9, [4])
    assert [u["value"] for u in settings] == [11, 2, 1.0, 1.0, 1.75, 32, 32, 8]
    # a spec drawn on another frame size is refused
    other = fn["on_upload"](np.zeros((60, 80, 3), np.uint8), new_state())[0]
    with pytest.raises(gr.Error, match="the spec is 160x120 but the first frame is 80x60"):
        fn["on_load_spec"](spec_path, other)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(gr.Error, match="bad.json: not a JSON spec"):
        fn["on_load_spec"](str(bad), fresh)


def test_examples_with_and_without_a_spec(first_frame, tmp_path):
    image, masks = first_frame
    root = tmp_path / "examples"
    (root / "square").mkdir(parents=True)
    Image.fromarray(image).save(root / "square" / "first_frame.png")
    o = dr.DrawnObject(1, "square", mask=masks["square"], path=[(120, 90)])
    traj = dr.build_trajectory([o], (W, H), 9, "box")
    (root / "square" / "trajectory.json").write_text(json.dumps(dr.spec_dict([o], traj, "box")))
    (root / "plain").mkdir()
    Image.fromarray(image[:, ::-1]).save(root / "plain" / "first_frame.jpg")
    (root / "plain" / "prompt.txt").write_text("a mirrored scene\n")
    (root / "square" / "masks").mkdir()
    Image.fromarray(masks["square"].astype(np.uint8)).save(root / "square" / "masks" / "square_0.png")
    found = find_examples([root])
    assert found == {"plain/first_frame.jpg": (root / "plain" / "first_frame.jpg", None),
                     "square/first_frame.png": (root / "square" / "first_frame.png", root / "square" / "trajectory.json")}

    fn = handlers(build_app(generate_fn=Recorder(), output_dir=tmp_path / "out", examples_dirs=[root]))
    out = fn["on_example"]("square/first_frame.png", new_state())
    state = out[0]
    np.testing.assert_array_equal(out[1], image)
    assert state["objects"][0].path == [(120, 90)] and state["objects"][0].label == "square"
    out = fn["on_example"]("plain/first_frame.jpg", new_state())
    assert [o.mask for o in out[0]["objects"]] == [None]
    assert out[9]["value"] == "a mirrored scene"
    with pytest.raises(gr.Error, match="unknown example"):
        fn["on_example"]("nothing.png", new_state())


def example_dropdown(demo):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "example")


def test_first_example_is_preselected_and_none_picked_is_a_message(first_frame, tmp_path, monkeypatch):
    """The Example dropdown starts on the first example, so Use example works at once; pressing it with
    nothing picked shows a message and changes nothing (no error: that would mark every output red)."""
    image, _ = first_frame
    root = tmp_path / "examples"
    for name in ("b", "a"):
        (root / name).mkdir(parents=True)
        Image.fromarray(image).save(root / name / "first_frame.png")
    demo = build_app(generate_fn=Recorder(), output_dir=tmp_path / "out", examples_dirs=[root])
    dropdown = example_dropdown(demo)
    assert dropdown.value == "a/first_frame.png" == next(iter(find_examples([root])))
    fn = handlers(demo)
    assert fn["on_example"](dropdown.value, new_state())[0]["image"] is not None

    messages = []
    monkeypatch.setattr(gr, "Info", messages.append)
    state = new_state()
    for nothing in (None, ""):
        out = fn["on_example"](nothing, state)
        assert out[0] is state and state["image"] is None
        assert len(out) == 5 + 13 and all(u == gr.skip() for u in out[1:])  # state, 4 views, 13 fields
    assert messages == ["Pick an example under Example first, then press Use example."] * 2
    empty = build_app(generate_fn=Recorder(), output_dir=tmp_path / "out", examples_dirs=[])
    assert example_dropdown(empty).value is None
    handlers(empty)["on_example"](None, new_state())
    assert messages[-1] == "There are no examples here: upload a first frame instead."


def test_bundled_example_loads(tmp_path):
    """The repository's own example (examples/first_frame.png + trajectory.json) opens for editing:
    the frame-0 masks are the spec's, each path ends at the centre of the object's last box, and
    every kind can be built from it."""
    from magicmotion.trajectory import load, masks_to_boxes

    root = Path(__file__).resolve().parents[2] / "examples"
    found = find_examples([root]) if root.is_dir() else {}
    name = next((n for n, (_, spec) in found.items() if spec is not None), None)
    if name is None:
        pytest.skip(f"no example with a trajectory spec under {root}")
    fn = handlers(build_app(generate_fn=Recorder(), output_dir=tmp_path, examples_dirs=[root]))
    out = fn["on_example"](name, new_state())
    state = out[0]
    spec = masks_to_boxes(load(found[name][1]))
    assert [o.id for o in state["objects"]] == spec.ids
    for o, track in zip(state["objects"], spec.objects):
        np.testing.assert_array_equal(o.mask, track.mask(0))
        last = track.boxes[max(track.boxes)]
        np.testing.assert_allclose(o.path[-1], [(last[0] + last[2]) / 2, (last[1] + last[3]) / 2])
    h, w = state["image"].shape[:2]
    for kind in ("mask", "box", "sparse_box"):
        traj = dr.build_trajectory(state["objects"], (w, h), spec.num_frames, kind, timing="time")
        assert render(traj, kind).shape == (spec.num_frames, h, w, 3)


# ------------------------------------------------------------------------------------- the command


def test_app_command_defaults():
    args = build_parser().parse_args(["app"])
    assert (args.host, args.port, args.base, args.controlnet, args.sam2) == ("127.0.0.1", 7860, None, None, None)


@pytest.mark.slow
def test_app_command_serves_on_localhost(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "-m", "magicmotion", "app", "--port", str(port), "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, line = time.time() + 60, ""
        while time.time() < deadline and "running at" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        match = re.search(r"running at (http://\S+)", line)
        assert match, f"no address printed (last line {line!r})"
        url = match.group(1)
        assert url.startswith(f"http://127.0.0.1:{port}")
        with urllib.request.urlopen(url, timeout=20) as response:
            assert response.status == 200 and b"MagicMotion" in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_app_command_port_in_use(tmp_path, capsys):
    from magicmotion.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["app", "--port", str(port), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"magicmotion: error: cannot start the app on 127.0.0.1:{port}") and "\n" not in err


@pytest.mark.slow
def test_pipeline_generate_fn_loads_each_model_once(first_frame, monkeypatch):
    """The app's own generation: `magicmotion.pipelines.generate` on a pipeline loaded on first use.
    The tiny model (base None) loads its ControlNet for each kind; a given model serves all kinds."""
    from magicmotion.app.state import pipeline_generate_fn
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines import loading
    from magicmotion.pipelines.pipeline_wan import MagicMotionWanPipeline
    from magicmotion.pipelines.tiny import tiny_wan_components

    components = tiny_wan_components(seed=0)
    pipe = MagicMotionWanPipeline(**components,
                                  controlnet=WanTrajectoryControlNet.from_transformer(components["transformer"]))
    loads = []

    def load_pipeline(base=None, controlnet=None, kind=None, **kw):
        loads.append((base, controlnet, kind))
        return pipe

    monkeypatch.setattr(loading, "load_pipeline", load_pipeline)
    image, masks = first_frame
    o = dr.DrawnObject(1, "square", mask=masks["square"], path=[(100, 60)])
    settings = dict(num_inference_steps=1, seed=0, guidance_scale=1.0, width=32, height=16)
    for base, expected in [(None, [(None, None, "box"), (None, None, "mask")]), ("base", [("base", "cn", "box")])]:
        loads.clear()
        fn = pipeline_generate_fn(base, "cn" if base else None)
        for kind in ("box", "mask"):
            traj = dr.build_trajectory([o], (W, H), 5, kind)
            frames, maps = fn(image, "a red square", traj, kind, **settings)
            assert frames.shape == maps.shape == (5, 16, 32, 3) and frames.dtype == np.uint8
            np.testing.assert_array_equal(maps, render(traj, kind, size=(32, 16)))
        assert loads == expected


def test_settings_fields_start_at_the_models_recommended(tmp_path):
    import shutil

    from magicmotion.app.state import model_defaults
    from magicmotion.pipelines.loading import TINY_MODEL_DIR
    from magicmotion.pipelines.settings import read_settings_file, write_settings_file

    tiny = read_settings_file(TINY_MODEL_DIR / "base")
    expected = {k: tiny[k] for k in ("num_frames", "num_inference_steps", "guidance_scale", "fps",
                                     "trajectory_palette")}
    assert model_defaults(None) == expected
    # the tiny base named by its folder, with settings of its own
    base = tmp_path / "base"
    shutil.copytree(TINY_MODEL_DIR / "base", base)
    write_settings_file(base, dict(tiny, guidance_scale=2.5, num_frames=33))
    got = model_defaults(base, TINY_MODEL_DIR / "stage2" / "controlnet")
    assert got["guidance_scale"] == 2.5 and got["num_frames"] == 33 and got["fps"] == tiny["fps"]


def test_points_mode_without_sam2_is_not_offered(tmp_path):
    """Issue 38: without --sam2, "Points (SAM 2)" left red Error badges; it is not offered, and one line
    under the modes says how to have it. With a segmenter it is there and the line is not."""
    from magicmotion.app.state import MODES, NO_SAM2

    def mode_radio(demo):
        (radio,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "mode"]
        return [c[0] if isinstance(c, (list, tuple)) else c for c in radio.choices], radio.info

    choices, info = mode_radio(build_app(generate_fn=Recorder(), output_dir=tmp_path / "a", examples_dirs=[]))
    assert choices == ["Box", "Path"] and info == NO_SAM2 and "--sam2" in info
    segmenter = dr.Sam2Segmenter.__new__(dr.Sam2Segmenter)  # the app only asks that one is there
    choices, info = mode_radio(build_app(generate_fn=Recorder(), output_dir=tmp_path / "b", examples_dirs=[],
                                         sam2=segmenter))
    assert choices == list(MODES) and info is None
