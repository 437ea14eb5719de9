"""Every kind of bad spec gives a TrajectoryError whose one-line message names the file, and the
object id and frame where there is one. (The CLI side, exit 2 and no output, is in tests/test_cli.py.)"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from magicmotion.errors import TrajectoryError
from magicmotion.trajectory import encode_mask, load


def set_object(key, value, index=0):
    def mutate(spec):
        spec["objects"][index][key] = value
    return mutate


def set_top(key, value):
    def mutate(spec):
        spec[key] = value
    return mutate


def drop_top(key):
    def mutate(spec):
        del spec[key]
    return mutate


def rle(h, w):
    counts = encode_mask(np.ones((h, w), bool))["counts"].decode()
    return {"size": [h, w], "counts": counts}


BASE = {
    "version": 1, "width": 40, "height": 30, "num_frames": 5,
    "objects": [{"id": 1, "label": "dog", "boxes": {"0": [2, 3, 12, 9], "4": [22, 13, 38, 29]}},
                {"id": 3, "boxes": {"0": [20, 2, 30, 10]}}],
}

# (name, mutation of BASE, regex the message must match); the message must also name the file
CASES = [
    ("wrong version", set_top("version", 2), r"unsupported version 2 \(expected 1\)"),
    ("version as text", set_top("version", "1"), r"unsupported version '1'"),
    ("version true", set_top("version", True), r"unsupported version True"),
    ("no version", drop_top("version"), r"unsupported version None"),
    ("missing width", drop_top("width"), r"missing 'width'"),
    ("missing height", drop_top("height"), r"missing 'height'"),
    ("missing num_frames", drop_top("num_frames"), r"missing 'num_frames'"),
    ("zero width", set_top("width", 0), r"'width' must be a positive integer, got 0"),
    ("fractional height", set_top("height", 30.5), r"'height' must be a positive integer, got 30.5"),
    ("num_frames as text", set_top("num_frames", "5"), r"'num_frames' must be a positive integer"),
    ("no objects", set_top("objects", []), r": no objects"),
    ("objects missing", drop_top("objects"), r": no objects"),
    ("objects not a list", set_top("objects", {"id": 1}), r"'objects' must be a list"),
    ("key frame past the end", set_object("boxes", {"5": [1, 1, 5, 5]}),
     r"object 1: key frame 5 outside 0\.\.4"),
    ("negative key frame", set_object("boxes", {"-1": [1, 1, 5, 5]}), r"object 1: key frame -1 outside"),
    ("fractional key frame", set_object("boxes", {"1.5": [1, 1, 5, 5]}),
     r"object 1: key frame '1\.5' is not an integer"),
    ("key frame not a number", set_object("boxes", {"first": [1, 1, 5, 5]}),
     r"object 1: key frame 'first' is not an integer"),
    ("mask key frame past the end", set_object("masks", {"7": rle(30, 40)}),
     r"object 1: key frame 7 outside 0\.\.4"),
    ("x0 >= x1", set_object("boxes", {"2": [12, 3, 2, 9]}),
     r"object 1 frame 2: box \[12\.0, 3\.0, 2\.0, 9\.0\] must have 0 <= x0 < x1 <= 40"),
    ("y0 == y1", set_object("boxes", {"2": [2, 9, 12, 9]}), r"object 1 frame 2: box .* 0 <= y0 < y1 <= 30"),
    ("box past the right edge", set_object("boxes", {"3": [2, 3, 41, 9]}), r"object 1 frame 3: box"),
    ("box above the frame", set_object("boxes", {"3": [2, -1, 10, 9]}), r"object 1 frame 3: box"),
    ("box of three numbers", set_object("boxes", {"0": [2, 3, 12]}),
     r"object 1 frame 0: a box must be \[x0, y0, x1, y1\]"),
    ("box of strings", set_object("boxes", {"0": ["2", 3, 12, 9]}), r"object 1 frame 0: a box must be"),
    ("boxes not a mapping", set_object("boxes", [[2, 3, 12, 9]]), r"object 1: 'boxes' and 'masks' must map"),
    ("mask of the wrong size (RLE)", set_object("masks", {"0": rle(10, 20)}),
     r"object 1 frame 0: mask is 20x10, the trajectory is 40x30"),
    ("mask of the wrong size (PNG)", set_object("masks", {"1": "small.png"}),
     r"object 1 frame 1: mask is 20x10, the trajectory is 40x30"),
    ("missing mask file", set_object("masks", {"0": "masks/none.png"}),
     r"object 1 frame 0: mask file .*none\.png not found"),
    ("unreadable mask PNG", set_object("masks", {"2": "broken.png"}),
     r"object 1 frame 2: mask .*broken\.png is not a readable image"),
    ("RLE counts that do not cover the mask", set_object("masks", {"0": {"size": [30, 40], "counts": "0"}}),
     r"object 1 frame 0: bad RLE \(runs cover 0 pixels, the mask has 1200\)"),
    ("RLE counts with bad characters", set_object("masks", {"0": {"size": [30, 40], "counts": "\x7f\x7f"}}),
     r"object 1 frame 0: bad RLE"),
    ("RLE counts not ASCII", set_object("masks", {"0": {"size": [30, 40], "counts": "é"}}),
     r"object 1 frame 0: bad RLE"),
    ("RLE list counts too short", set_object("masks", {"0": {"size": [30, 40], "counts": [5, 10]}}),
     r"object 1 frame 0: bad RLE"),
    ("RLE counts a number", set_object("masks", {"0": {"size": [30, 40], "counts": 5}}),
     r"object 1 frame 0: bad RLE: 'counts' must be"),
    ("RLE size wrong", set_object("masks", {"0": {"size": [30], "counts": "PP"}}),
     r"object 1 frame 0: bad RLE size \[30\]"),
    ("mask neither path nor RLE", set_object("masks", {"0": 17}),
     r"object 1 frame 0: a mask must be a PNG path or"),
    ("duplicate ids", set_object("id", 1, index=1), r"duplicate object id 1"),
    ("zero id", set_object("id", 0, index=1), r"object id 0 must be a positive integer"),
    ("negative id", set_object("id", -3), r"object id -3 must be a positive integer"),
    ("id as text", set_object("id", "1"), r"object id '1' must be a positive integer"),
    ("id missing", lambda spec: spec["objects"][1].pop("id"), r"object #1 has no 'id'"),
]


@pytest.fixture
def spec_dir(tmp_path):
    Image.fromarray(np.full((10, 20), 255, np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def write(spec_dir, data) -> str:
    import json

    path = spec_dir / "spec.json"
    path.write_text(json.dumps(data))
    return path


def test_base_spec_is_valid(spec_dir):
    assert load(write(spec_dir, BASE)).ids == [1, 3]


@pytest.mark.parametrize("name, mutate, message", CASES, ids=[c[0] for c in CASES])
def test_bad_spec(spec_dir, name, mutate, message):
    data = copy.deepcopy(BASE)
    mutate(data)
    path = write(spec_dir, data)
    with pytest.raises(TrajectoryError, match=message) as info:
        load(path)
    text = str(info.value)
    assert text.startswith(str(path) + ": ")
    assert "\n" not in text


@pytest.mark.parametrize("text, message", [
    ('{"version": 1, "width": ', r"malformed JSON \(Expecting value: line 1 column 25"),
    ("", r"malformed JSON"),
    ("[1, 2]", r"a spec must be a JSON object"),
])
def test_malformed_json(spec_dir, text, message):
    path = spec_dir / "spec.json"
    path.write_text(text)
    with pytest.raises(TrajectoryError, match=message) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_not_a_file(tmp_path):
    with pytest.raises(TrajectoryError, match=r"missing\.json: file not found"):
        load(tmp_path / "missing.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TrajectoryError, match=r"bin\.json: not a text file"):
        load(tmp_path / "bin.json")
