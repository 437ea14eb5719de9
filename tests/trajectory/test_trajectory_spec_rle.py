"""COCO run-length encoding in specs: our reader of compressed strings (`rle_runs`, `rle_counts`)
against pycocotools, and the RLE masks a spec may hold (compressed or uncompressed, their sizes and
the messages for bad ones). pycocotools is the outside truth: it encodes the masks and decodes them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from magicmotion.errors import TrajectoryError
from magicmotion.trajectory import from_dict, load
from magicmotion.trajectory.spec import rle_counts, rle_runs
from magicmotion.trajectory.tracks import load_tracks

FEW = settings(max_examples=40, deadline=None)


def coco(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE of a bool (H, W) mask."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def runs_of(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts, computed here from the pixels: run lengths in column-major order,
    zeros first (a first run of 0 when the top-left pixel is set)."""
    flat = mask.ravel(order="F").astype(np.int8)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    counts = np.diff(bounds).tolist()
    return [0] + counts if flat.size and flat[0] else counts


def alternating(h: int, w: int, start: int) -> np.ndarray:
    """Pixels alternating in column-major order: the mask with the most runs (h * w, or h * w + 1
    counts when it starts with a set pixel)."""
    return ((np.arange(h * w) + start) % 2).reshape(w, h).T.astype(bool)


masks = st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda hw: arrays(np.bool_, hw) | st.sampled_from([np.zeros(hw, bool), np.ones(hw, bool),
                                                       alternating(*hw, 0), alternating(*hw, 1)]))


def spec_with_mask(value, width=None, height=None) -> dict:
    return {"version": 1, "width": width or 40, "height": height or 30, "num_frames": 3,
            "objects": [{"id": 1, "masks": {"0": value}}]}


# ---------------------------------------------------------------------------------------- reader


@FEW
@given(st.lists(masks, min_size=1, max_size=5), st.data())
def test_rle_runs_of_several_masks_match_pycocotools(ms, data):
    """Several masks read in one pass give each mask's runs, in order, as its pixels have them; counts
    given as bytes (pycocotools) or as str (JSON) read the same."""
    rles = []
    for m in ms:
        rle = coco(m)
        if data.draw(st.booleans()):
            rle = {"size": rle["size"], "counts": rle["counts"].decode()}
        rles.append(rle)
    runs, per_mask = rle_runs(rles)
    expected = [runs_of(m) for m in ms]
    assert runs.dtype == np.int64 and per_mask.dtype == np.int64
    assert per_mask.tolist() == [len(e) for e in expected]
    assert runs.tolist() == [r for e in expected for r in e]
    for rle, m in zip(rles, ms):
        assert rle_counts(rle).tolist() == runs_of(m)
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), m)  # pycocotools reads str too


@FEW
@given(masks)
def test_rle_counts_of_uncompressed_counts(m):
    """Uncompressed counts (a list, zeros first) read as the same runs, a first run of 0 included."""
    counts = runs_of(m)
    assert rle_counts({"size": list(m.shape), "counts": counts}).tolist() == counts


def test_rle_runs_of_no_masks_and_empty_strings():
    runs, per_mask = rle_runs([])
    assert runs.dtype == per_mask.dtype == np.int64 and len(runs) == len(per_mask) == 0
    # a mask of no pixels may have no runs at all, between others
    runs, per_mask = rle_runs([coco(np.ones((1, 3), bool)), {"size": [0, 3], "counts": b""}, coco(np.zeros((2, 2), bool))])
    assert runs.tolist() == [0, 3, 4] and per_mask.tolist() == [2, 0, 1]


def test_rle_counts_reads_numbers_of_up_to_12_characters():
    """A number may take up to 12 characters of 5 bits (60 bits, within int64); pycocotools reads a
    zero-padded one the same way. 13 do not fit and are refused."""
    padded = b"P" * 11 + b"0"  # 0 in 12 characters: continuation bits on zero payloads
    rle = {"size": [1, 2], "counts": padded + b"2"}  # runs [0, 2]: both pixels set
    assert rle_counts(rle).tolist() == [0, 2]
    np.testing.assert_array_equal(mask_utils.decode(rle), np.ones((1, 2), np.uint8))
    with pytest.raises(ValueError, match=r"^counts string has a number that is too long$"):
        rle_counts({"size": [1, 2], "counts": b"P" + padded + b"2"})


@pytest.mark.parametrize("size, counts, message", [
    ([1, 1], b"p1", "counts string has characters outside '0'..'o'"),  # 'p' is one past 'o'
    ([1, 1], b"/1", "counts string has characters outside '0'..'o'"),  # '/' is one before '0'
    ([1, 1], b"P", "counts string ends inside a number"),  # one character, its continuation bit set
    ([2, 2], b"3P", "counts string ends inside a number"),
    ([1, 1], b"A", "negative run length"),  # 0x11: the sign bit set on a last character
    ([1, 1], [-1, 2], "negative run length"),
    ([2, 2], b"", "runs cover 0 pixels, the mask has 4"),
    ([2, 2], b"3", "runs cover 3 pixels, the mask has 4"),
])
def test_rle_counts_messages(size, counts, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        rle_counts({"size": size, "counts": counts})


def test_rle_runs_checks_every_mask():
    """A bad mask is found wherever it is among several: an empty string between two good masks whose
    next run happens to be its pixel count, or last."""
    good, bad = coco(np.zeros((2, 2), bool)), {"size": [2, 2], "counts": b""}
    for rles in ([good, bad, good], [good, bad]):
        with pytest.raises(ValueError, match=r"^runs cover 0 pixels, the mask has 4$"):
            rle_runs(rles)


# ---------------------------------------------------------------------------------- RLE in specs


@FEW
@given(masks, st.booleans())
@example(alternating(3, 2, 1), False)  # h * w + 1 counts, the most a list may have
@example(alternating(3, 2, 0), False)
@example(np.zeros((3, 2), bool), False)  # one run of h * w
@example(np.ones((1, 1), bool), False)  # a 1x1 trajectory
def test_spec_rle_masks_match_pycocotools(m, compressed):
    """A spec's RLE mask, as pycocotools writes it or as uncompressed counts, reads as that mask, for
    masks of any size down to 1x1 and not square."""
    h, w = m.shape
    value = ({"size": [h, w], "counts": coco(m)["counts"].decode()} if compressed
             else {"size": [h, w], "counts": runs_of(m)})
    traj = from_dict(spec_with_mask(value, w, h))
    np.testing.assert_array_equal(traj.object(1).mask(0), m)
    np.testing.assert_array_equal(mask_utils.decode(traj.object(1).masks[0]).astype(bool), m)
    assert traj.object(1).mask_area(0) == m.sum()


COUNTS_MESSAGE = "bad RLE: 'counts' must be a string (compressed) or a list of integers in 0..h*w"


@pytest.mark.parametrize("counts", [
    [0, 0] + [1] * 6,  # h * w + 2 counts (adding up to h * w): longer than any mask needs
    [7],  # a run longer than the mask
    [-1, 7],
    [2.0, 4],
    [True, 5],
    [3, "3"],
    5,
])
def test_spec_rle_bad_uncompressed_counts(counts):
    with pytest.raises(TrajectoryError, match=f"^trajectory: object 1 frame 0: {re.escape(COUNTS_MESSAGE)}$"):
        from_dict(spec_with_mask({"size": [3, 2], "counts": counts}, 2, 3))


@pytest.mark.parametrize("size", [[0, 5], [5, -1], [2.5, 3], [True, 3], [3], [3, 3, 3], "3x3", (3, 3)])
def test_spec_rle_bad_size(size):
    with pytest.raises(TrajectoryError, match=f"^trajectory: object 1 frame 0: bad RLE size {re.escape(repr(size))}$"):
        from_dict(spec_with_mask({"size": size, "counts": "3"}))


@pytest.mark.parametrize("h, w", [(10, 9000), (9000, 10)])
def test_spec_rle_size_beyond_the_limit(h, w):
    """An RLE may not claim more pixels than docs/limits.md allows, whatever the spec's size."""
    with pytest.raises(TrajectoryError, match=f"^s.json: object 1 frame 0: RLE size {w}x{h} is beyond the limit of 8192"):
        from_dict(spec_with_mask({"size": [h, w], "counts": "0"}), source="s.json")


def test_spec_bad_compressed_counts_name_the_mask():
    good = {"size": [30, 40], "counts": coco(np.zeros((30, 40), bool))["counts"].decode()}
    data = spec_with_mask(good)
    data["objects"].append({"id": 2, "masks": {"0": good, "2": {"size": [30, 40], "counts": "3"}}})
    with pytest.raises(TrajectoryError, match=r"^trajectory: object 2 frame 2: bad RLE \(runs cover 3 pixels, "
                                              r"the mask has 1200\)$"):
        from_dict(data)


def test_tracks_file_rle_mask(tmp_path):
    """A point-tracks file's frame-0 mask is read as a spec's: compressed RLE too, and a bad one named."""
    m = np.zeros((48, 64), bool)
    m[28:44, 38:54] = True
    obj = {"id": 1, "tracks": [[[40, 30], [41, 31]]], "mask": {"size": [48, 64], "counts": coco(m)["counts"].decode()}}
    path = tmp_path / "tracks.json"
    path.write_text(json.dumps({"width": 64, "height": 48, "objects": [obj]}))
    np.testing.assert_array_equal(load_tracks(path).objects[0].mask, m)
    obj["mask"]["counts"] = "3"
    path.write_text(json.dumps({"width": 64, "height": 48, "objects": [obj]}))
    with pytest.raises(TrajectoryError, match=r"tracks\.json: object 1 frame 0: bad RLE \(runs cover 3 pixels"):
        load_tracks(path)


# ---------------------------------------------------------------------------------- mask files


def test_mask_paths_refused_without_a_folder():
    """Specs sent to a server (base_dir=None) name no files: a path is refused without a look at the
    disk, and inline RLE reads."""
    with pytest.raises(TrajectoryError, match=re.escape(
            'trajectory: object 1 frame 0: mask file paths are not accepted here; give masks inline as RLE '
            '{"size": [h, w], "counts": "..."}') + "$"):
        from_dict(spec_with_mask("/etc/passwd"), base_dir=None)
    m = np.zeros((30, 40), bool)
    m[5:9, 3:30] = True
    traj = from_dict(spec_with_mask({"size": [30, 40], "counts": coco(m)["counts"].decode()}), base_dir=None)
    np.testing.assert_array_equal(traj.object(1).mask(0), m)


@pytest.mark.parametrize("value, why", [("../m.png", "must be a path inside"), ("/tmp/m.png", "must be a path inside"),
                                        ("", "is not a path")])
def test_mask_path_outside_the_spec_folder(tmp_path, value, why):
    sub = tmp_path / "spec"
    sub.mkdir()
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(tmp_path / "m.png")
    path = sub / "spec.json"
    path.write_text(json.dumps(spec_with_mask(value)))
    with pytest.raises(TrajectoryError, match=f"^{re.escape(f'{path}: object 1 frame 0: mask file {value!r} {why}')}"):
        load(path)


def test_unreadable_mask_in_a_folder_of_that_name(tmp_path):
    """The reason PIL gives for an unreadable mask is passed on whole, whatever the folder's name."""
    folder = tmp_path / "unreadable mask"
    folder.mkdir()
    (folder / "m.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UnidentifiedImageError) as pil:
        Image.open(folder / "m.png")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec_with_mask("unreadable mask/m.png")))
    with pytest.raises(TrajectoryError) as info:
        load(path)
    assert str(info.value) == (f"{path}: object 1 frame 0: mask {folder / 'm.png'} is not a readable image "
                               f"({pil.value})")
