"""Hostile uploads through the app's HTTP API, as a remote user would send them: the app is launched
on a free localhost port and driven with gradio_client. Each row must come back as our one message
(not Gradio's generic "Error"), say nothing about files on the server, and write nothing in the app's
output folder. A first frame is refused from its header before it is decoded (a 20000x20000 PNG), a
non-image and a 1x1 image get our message; an uploaded spec may not name server files, nor nest
100k deep, nor carry an RLE mask beyond the pixel limits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the app needs gradio: pip install 'magicmotion[app]'")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402
from shared_helpers import free_port, png_header  # noqa: E402

from magicmotion.app.ui import build_app, launch  # noqa: E402


def image(path: Path, width: int, height: int) -> Path:
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)
    return path


def spec(path: Path, masks: dict | None = None, text: str | None = None) -> Path:
    data = {"version": 1, "width": 64, "height": 48, "num_frames": 9,
            "objects": [{"id": 1, "boxes": {"0": [10, 10, 40, 40]}, "masks": masks or {}}]}
    path.write_text(text if text is not None else json.dumps(data))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(client, output folder) of an app running on localhost; no model is loaded (generation is not
    reached by these rows)."""
    out = tmp_path_factory.mktemp("app-out")
    demo = build_app(generate_fn=lambda *a, **k: None, output_dir=out, examples_dirs=[])
    url = launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield Client(url, verbose=False), out  # one session: a refused upload leaves its state as it was
    demo.close()


# (id, endpoint, whether a valid first frame is uploaded first, build(tmp) -> the endpoint's inputs,
#  what the message must say)
CASES = [
    ("first frame: 20000x20000 bomb", "/on_upload", False,
     lambda t: [handle_file(png_header(t / "bomb.png", 20000, 20000))], "bomb.png: first frame beyond the limit"),
    ("first frame: 9000x9000 header", "/on_upload", False,
     lambda t: [handle_file(png_header(t / "big.png", 9000, 9000))], "big.png: first frame is 9000x9000, beyond"),
    ("first frame: 5000x20 header", "/on_upload", False,
     lambda t: [handle_file(png_header(t / "wide.png", 5000, 20))], "wide.png: 5000x20 is too large"),
    ("first frame: not an image", "/on_upload", False,
     lambda t: [handle_file(t / "notes.png") if (t / "notes.png").write_text("hello") else None],
     "notes.png: not an image"),
    ("first frame: truncated PNG", "/on_upload", False,
     lambda t: [handle_file(t / "cut.png") if (t / "cut.png").write_bytes(
         image(t / "whole.png", 64, 48).read_bytes()[:60]) else None], "cut.png: not an image"),
    ("first frame: 1x1", "/on_upload", False, lambda t: [handle_file(image(t / "dot.png", 1, 1))],
     "dot.png: the first frame is 1x1; at least 16 pixels a side"),
    ("spec: absolute mask path", "/on_load_spec", True,
     lambda t: [handle_file(spec(t / "s.json", {"0": "/etc/passwd"}))], "mask file paths are not accepted here"),
    ("spec: ../ mask path", "/on_load_spec", True,
     lambda t: [handle_file(spec(t / "s.json", {"0": "../../secret.png"}))], "mask file paths are not accepted"),
    ("spec: missing mask path", "/on_load_spec", True,
     lambda t: [handle_file(spec(t / "s.json", {"0": "/nonexistent/x.png"}))], "mask file paths are not accepted"),
    ("spec: nested 100k deep", "/on_load_spec", True,
     lambda t: [handle_file(spec(t / "deep.json", text="[" * 100000 + "]" * 100000))],
     "deep.json: not a JSON spec (nested deeper than 64 levels)"),
    ("spec: RLE mask 20000x20000", "/on_load_spec", True,
     lambda t: [handle_file(spec(t / "s.json", {"0": {"size": [20000, 20000], "counts": [400000000]}}))], "s.json"),
    ("spec: RLE counts 10^400", "/on_load_spec", True,
     lambda t: [handle_file(spec(t / "s.json", text=spec(t / "x.json", {"0": {"size": [48, 64], "counts": [7]}})
                                 .read_text().replace("[7]", "[1" + "0" * 400 + "]")))], "s.json"),
    ("reference video: not a video", "/on_take_motion", True,
     lambda t: [handle_file(t / "ref.mp4") if (t / "ref.mp4").write_text("not a video") else None, "ball"],
     "ref.mp4"),
    ("point tracks: not an array", "/on_load_tracks", True,
     lambda t: [handle_file(t / "tracks.npy") if (t / "tracks.npy").write_text("not numpy") else None], "tracks.npy"),
]


@pytest.mark.parametrize("endpoint, needs_frame, build, message",
                         [pytest.param(e, f, b, m, id=i) for i, e, f, b, m in CASES])
def test_hostile_upload_is_our_message(server, tmp_path, endpoint, needs_frame, build, message):
    client, out = server
    if needs_frame:
        client.predict(handle_file(image(tmp_path / "frame.png", 64, 48)), api_name="/on_upload")
    before = sorted(out.rglob("*"))
    with pytest.raises(AppError) as info:
        client.predict(*build(tmp_path), api_name=endpoint)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text.strip() and "Traceback" not in text
    assert "not found" not in text and "exists" not in text  # nothing said about server files
    assert str(tmp_path) not in text and "/gradio/" not in text  # an upload is named by its name alone
    assert sorted(out.rglob("*")) == before


def test_a_good_first_frame_goes_through(server, tmp_path):
    """The same route takes a real image (the refusals above are not a broken upload)."""
    client, _ = server
    result = client.predict(handle_file(image(tmp_path / "frame.png", 64, 48)), api_name="/on_upload")
    assert "First frame 64x48" in result[-1]
