"""The app's spec loading reads nothing on the server but what was uploaded: mask paths (absolute or
with ../) in an uploaded spec are refused without saying whether the file exists; deep JSON is refused."""

from __future__ import annotations

import json

import pytest

gr = pytest.importorskip("gradio", reason="the app needs gradio: pip install 'magicmotion[app]'")

from test_ui import app  # noqa: E402,F401  (the fixture)


def spec_with_mask(path: str) -> dict:
    return {"version": 1, "width": 160, "height": 120, "num_frames": 9,
            "objects": [{"id": 1, "boxes": {"0": [10, 10, 40, 40]}, "masks": {"0": path}}]}


@pytest.mark.parametrize("mask", ["/etc/passwd", "../../secret.png", "masks/beside.png", "/nonexistent/x.png"])
def test_uploaded_spec_may_not_name_server_files(app, tmp_path, mask):
    fn, _, state = app
    spec = tmp_path / "upload" / "spec.json"
    spec.parent.mkdir()
    spec.write_text(json.dumps(spec_with_mask(mask)))
    with pytest.raises(gr.Error) as info:
        fn["on_load_spec"](str(spec), state)
    message = info.value.message
    assert "mask file paths are not accepted here" in message
    assert "not found" not in message and "unreadable" not in message  # nothing said about the file


def test_uploaded_deep_json_is_a_message(app, tmp_path):
    fn, _, state = app
    spec = tmp_path / "deep.json"
    spec.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(gr.Error, match="deep.json: not a JSON spec \\(nested deeper than 64 levels\\)"):
        fn["on_load_spec"](str(spec), state)
