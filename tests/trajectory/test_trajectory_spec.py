"""The JSON spec: reading boxes and masks (PNG paths, RLE), writing it back, RLE helpers, DAVIS-style
mask folders and the palette."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from conftest import disk
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pycocotools import mask as mask_utils

from magicmotion.errors import TrajectoryError
from magicmotion.trajectory import (PALETTE, ObjectTrack, Trajectory, decode_mask, encode_mask,
                                    from_dict, from_label_masks, from_mask_frames, load, mask_box,
                                    palette_color, palette_index, rle_box, save, to_dict)
from magicmotion.trajectory.spec import dumps, rle_counts


def same_trajectory(a: Trajectory, b: Trajectory) -> None:
    assert (a.width, a.height, a.num_frames, a.caption) == (b.width, b.height, b.num_frames, b.caption)
    assert a.ids == b.ids
    for oa, ob in zip(a.objects, b.objects):
        assert oa.label == ob.label
        assert sorted(oa.boxes) == sorted(ob.boxes)
        for t in oa.boxes:
            np.testing.assert_allclose(oa.boxes[t], ob.boxes[t], atol=1e-4)  # the spec keeps 4 decimals
        assert sorted(oa.masks) == sorted(ob.masks)
        for t in oa.masks:
            np.testing.assert_array_equal(oa.mask(t), ob.mask(t))


# ---------------------------------------------------------------------------------------- reading


def test_load_boxes(write_spec, basic_spec):
    traj = load(write_spec(basic_spec))
    assert (traj.width, traj.height, traj.num_frames) == (40, 30, 5)
    assert traj.ids == [1, 3]
    dog = traj.object(1)
    assert dog.label == "dog" and traj.object(3).label == ""
    assert sorted(dog.boxes) == [0, 4]
    assert dog.boxes[4].dtype == np.float64
    np.testing.assert_array_equal(dog.boxes[4], [22, 13, 38, 29])
    assert traj.object(3).boxes[0][3] == 10.5
    assert traj.source.endswith("spec.json")
    with pytest.raises(TrajectoryError, match="no object with id 2"):
        traj.object(2)


def test_mask_png_relative_to_spec(tmp_path, write_spec, basic_spec):
    (tmp_path / "masks").mkdir()
    m = disk(30, 40, 7, 6, 4)
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "masks" / "dog_0.png")
    basic_spec["objects"][0]["masks"] = {"0": "masks/dog_0.png"}
    traj = load(write_spec(basic_spec))
    rle = traj.object(1).masks[0]
    assert rle["size"] == [30, 40] and isinstance(rle["counts"], bytes)  # kept as RLE
    np.testing.assert_array_equal(traj.object(1).mask(0), m)
    assert traj.object(1).mask(3) is None
    assert traj.object(1).mask_area(0) == m.sum()


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "RGBA", "1", "I;16"])
def test_mask_png_modes(tmp_path, write_spec, basic_spec, mode):
    m = disk(30, 40, 20, 15, 6)
    if mode == "RGBA":  # white object on a transparent background, the object opaque
        arr = np.zeros((30, 40, 4), np.uint8)
        arr[..., :3] = 255
        arr[..., 3] = m * 255
        im = Image.fromarray(arr, "RGBA")
    elif mode == "RGB":
        arr = np.zeros((30, 40, 3), np.uint8)
        arr[m] = (0, 0, 7)
        im = Image.fromarray(arr)
    elif mode == "P":
        im = Image.fromarray(m.astype(np.uint8) * 2, "P")
        im.putpalette(PALETTE.tobytes())
    elif mode == "I;16":
        im = Image.fromarray(m.astype(np.uint16) * 300)
    else:
        im = Image.fromarray(m.astype(np.uint8) * 255).convert(mode)
    im.save(tmp_path / "m.png")
    basic_spec["objects"][1]["masks"] = {"0": "m.png"}
    np.testing.assert_array_equal(load(write_spec(basic_spec)).object(3).mask(0), m)


def test_mask_rle_compressed_and_uncompressed(write_spec, basic_spec):
    m = disk(30, 40, 10, 20, 5)
    compressed = encode_mask(m)
    flat = m.ravel(order="F").astype(int)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    basic_spec["objects"][0]["masks"] = {
        "0": {"size": [30, 40], "counts": compressed["counts"].decode()},
        "2": {"size": [30, 40], "counts": counts},
    }
    traj = load(write_spec(basic_spec))
    np.testing.assert_array_equal(traj.object(1).mask(0), m)
    np.testing.assert_array_equal(traj.object(1).mask(2), m)


def test_rle_counts_matches_pycocotools():
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((7, 5), bool), disk(50, 60, 30, 20, 15)]
    for _ in range(30):
        h, w = rng.integers(1, 40, size=2)
        masks.append(rng.random((h, w)) < rng.random())
    for m in masks:
        rle = encode_mask(m)
        counts = rle_counts(rle)
        assert counts.sum() == m.size
        rebuilt = np.repeat(np.arange(len(counts)) % 2, counts).reshape(m.shape[::-1]).T
        np.testing.assert_array_equal(rebuilt.astype(bool), m)
        np.testing.assert_array_equal(decode_mask(rle), m)


@pytest.mark.parametrize("counts", ["0", "1", "zz", "99999999", "A", ""])
def test_rle_counts_rejects_malformed(counts):
    with pytest.raises(ValueError):
        rle_counts({"size": [4, 5], "counts": counts.encode()})


def test_rle_box_and_mask_box():
    m = np.zeros((30, 40), bool)
    m[3:9, 2:12] = True
    m[20, 30] = True
    np.testing.assert_array_equal(mask_box(m), [2, 3, 31, 21])
    np.testing.assert_array_equal(rle_box(encode_mask(m)), [2, 3, 31, 21])
    assert mask_box(np.zeros((4, 4), bool)) is None
    assert rle_box(encode_mask(np.zeros((4, 4), bool))) is None


def test_object_track_set_mask():
    o = ObjectTrack(id=2)
    m = disk(10, 12, 5, 5, 3)
    o.set_mask(4, m)
    np.testing.assert_array_equal(o.mask(4), m)
    assert o.masks[4]["size"] == [10, 12]
    assert mask_utils.area(o.masks[4]) == m.sum()


# ---------------------------------------------------------------------------------------- writing


def test_save_load_round_trip(tmp_path):
    traj = Trajectory(width=40, height=30, num_frames=6, caption="two things move")
    a = ObjectTrack(id=1, label="cat",
                    boxes={0: np.array([1.25, 2, 11, 9.5]), 5: np.array([20, 10, 39, 30.0])})
    a.set_mask(0, disk(30, 40, 6, 6, 4))
    b = ObjectTrack(id=7)
    for t in range(6):
        b.set_mask(t, disk(30, 40, 10 + 3 * t, 20, 3))
    traj.objects = [a, b]
    path = save(traj, tmp_path / "out.json")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left
    back = load(path)
    same_trajectory(traj, back)
    assert to_dict(back) == to_dict(traj)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["caption"] == "two things move"
    assert data["objects"][0]["boxes"]["0"] == [1.25, 2, 11, 9.5]
    assert set(data["objects"][0]["masks"]["0"]) == {"size", "counts"}
    assert '"0": [1.25, 2, 11, 9.5]' in path.read_text()  # boxes on one line


def test_from_dict_to_dict_round_trip(basic_spec):
    traj = from_dict(basic_spec)
    again = to_dict(traj)
    assert again["objects"][0]["boxes"] == basic_spec["objects"][0]["boxes"]
    same_trajectory(from_dict(again), traj)


def test_dumps_keeps_strings():
    data = {"caption": "a [1,2] list", "b": [1, 2.5, -3], "c": {"size": [4, 5], "counts": "x["}}
    text = dumps(data)
    assert json.loads(text) == data
    assert '"b": [1, 2.5, -3]' in text


# ------------------------------------------------------------------------------- mask folders


def write_palette_png(path, labels: np.ndarray) -> None:
    im = Image.fromarray(labels.astype(np.uint8), "P")
    im.putpalette(PALETTE.tobytes())
    im.save(path)


def test_from_label_masks_absent_objects():
    labels = np.zeros((3, 10, 12), np.int64)
    labels[0, 1:4, 2:5] = 2
    labels[2, 5:9, 6:12] = 2
    labels[1, 0:2, 0:2] = 5
    traj = from_label_masks(labels, caption="c")
    assert traj.ids == [2, 5] and traj.num_frames == 3 and traj.caption == "c"
    two = traj.object(2)
    assert sorted(two.masks) == [0, 1, 2]
    assert sorted(two.boxes) == [0, 2]  # absent on frame 1: empty mask, no box
    assert not two.mask(1).any()
    np.testing.assert_array_equal(two.boxes[2], [6, 5, 12, 9])


def test_from_mask_frames_palette_pngs(tmp_path):
    labels = np.zeros((4, 20, 30), np.uint8)
    labels[0, 2:6, 3:9] = 1
    labels[0, 10:15, 20:25] = 4
    labels[3, 4:8, 5:11] = 1
    for t in (0, 3):
        write_palette_png(tmp_path / f"{t:05d}.png", labels[t])
    (tmp_path / "notes.txt").write_text("not a mask")
    traj = from_mask_frames(tmp_path, fill="none")  # as annotated
    assert traj.ids == [1, 4]
    assert (traj.width, traj.height, traj.num_frames) == (30, 20, 4)
    one = traj.object(1)
    assert sorted(one.masks) == [0, 3]
    np.testing.assert_array_equal(one.mask(3), labels[3] == 1)
    np.testing.assert_array_equal(one.boxes[0], [3, 2, 9, 6])
    assert sorted(traj.object(4).boxes) == [0]
    # filled: object 1 on every frame; object 4, left out of frame 3's PNG that shows object 1 again (a
    # complete annotation), is absent there and held on frames 1-2
    filled = from_mask_frames(tmp_path)
    assert sorted(filled.object(1).boxes) == [0, 1, 2, 3] and sorted(filled.object(4).boxes) == [0, 1, 2]
    assert sorted(filled.object(4).masks) == [0, 1, 2, 3] and not filled.object(4).mask(3).any()
    assert from_mask_frames(tmp_path, num_frames=10).num_frames == 10
    with pytest.raises(TrajectoryError, match=r"00003\.png: frame 3 outside 0\.\.1"):
        from_mask_frames(tmp_path, num_frames=2)


def test_from_mask_frames_reads_rendered_rgb(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[2:6, 3:9] = 1
    labels[10:15, 20:25] = 300 % 256  # id 44
    rgb = PALETTE[labels]
    Image.fromarray(rgb).save(tmp_path / "00000.png")
    traj = from_mask_frames(tmp_path)
    assert traj.ids == [1, 44]
    np.testing.assert_array_equal(traj.object(44).mask(0), labels == 44)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "00000.png")
    with pytest.raises(TrajectoryError, match=r"00000\.png: pixel \(x=0, y=0\) has colour \(1, 2, 3\)"):
        from_mask_frames(tmp_path)


def test_from_mask_frames_size_rounding(tmp_path):
    a = np.zeros((20, 100), np.uint8)
    a[5:10, 10:20] = 1
    b = np.zeros((20, 99), np.uint8)  # one column short, as in some DAVIS-style sets
    b[5:10, 50:60] = 2
    write_palette_png(tmp_path / "00000.png", a)
    write_palette_png(tmp_path / "00001.png", b)
    write_palette_png(tmp_path / "00002.png", a)
    with pytest.warns(UserWarning, match=r"00001\.png: size 99x20 differs"):
        traj = from_mask_frames(tmp_path)
    assert (traj.width, traj.height) == (100, 20)
    assert traj.object(2).mask(1).shape == (20, 100)
    write_palette_png(tmp_path / "00001.png", np.zeros((10, 50), np.uint8))
    with pytest.raises(TrajectoryError, match=r"00001\.png: size 50x10 differs from the other masks' 100x20"):
        from_mask_frames(tmp_path)


def test_from_mask_frames_bad_folders(tmp_path):
    with pytest.raises(TrajectoryError, match="not a folder"):
        from_mask_frames(tmp_path / "missing")
    with pytest.raises(TrajectoryError, match="no PNG masks"):
        from_mask_frames(tmp_path)
    write_palette_png(tmp_path / "00000.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(TrajectoryError, match="no objects"):
        from_mask_frames(tmp_path)
    (tmp_path / "00001.png").write_bytes(b"not a png")
    with pytest.raises(TrajectoryError, match=r"00001\.png: unreadable PNG"):
        from_mask_frames(tmp_path)
    (tmp_path / "00001.png").unlink()
    write_palette_png(tmp_path / "frame_0.png", np.ones((5, 5), np.uint8))
    with pytest.raises(TrajectoryError, match="are both frame 0"):
        from_mask_frames(tmp_path)


# ---------------------------------------------------------------------------------------- palette


def test_palette():
    assert palette_color(1) == (128, 0, 0)  # the PASCAL VOC / DAVIS colours
    assert palette_color(2) == (0, 128, 0)
    assert palette_color(3) == (128, 128, 0)
    colours = {palette_color(i) for i in range(1, 256)}
    assert len(colours) == 255 and (0, 0, 0) not in colours
    assert palette_color(256) == palette_color(1) and palette_index(256) == 1
    assert palette_index(255) == 255
    assert tuple(PALETTE[0]) == (0, 0, 0)


# ------------------------------------------------------------------- objects, validation, limits


def small_spec(**top) -> dict:
    """A valid 40x30, 3-frame spec of one object, with `top` keys replaced."""
    data = {"version": 1, "width": 40, "height": 30, "num_frames": 3,
            "objects": [{"id": 1, "boxes": {"0": [2, 3, 12, 9]}}]}
    data.update(top)
    return data


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


@settings(max_examples=25, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12))))
def test_object_track_from_masks(masks):
    """A tracker's masks: one mask on every frame, a box (OpenCV's bounding rectangle) on the frames
    where the mask is not empty."""
    obj = ObjectTrack.from_masks(5, "cat", masks)
    assert (obj.id, obj.label) == (5, "cat")
    assert sorted(obj.masks) == list(range(len(masks)))
    assert sorted(obj.boxes) == [t for t, m in enumerate(masks) if m.any()]
    for t, m in enumerate(masks):
        np.testing.assert_array_equal(obj.mask(t), m)
        assert obj.mask_area(t) == m.sum()
        if m.any():
            x, y, w, h = cv2.boundingRect(m.astype(np.uint8))
            assert obj.boxes[t].dtype == np.float64  # as boxes read from a spec
            np.testing.assert_array_equal(obj.boxes[t], [x, y, x + w, y + h])
    assert obj.mask_area(len(masks)) == 0 and obj.mask(len(masks)) is None


def test_mask_box_is_float_like_spec_boxes():
    m = np.zeros((5, 6), bool)
    m[1:3, 2:5] = True
    box = mask_box(m)
    assert box.dtype == np.float64
    box += 0.5  # moved in place, as the ops do with boxes
    np.testing.assert_array_equal(box, [2.5, 1.5, 5.5, 3.5])


def test_trajectory_copy_is_deep():
    traj = from_dict(small_spec())
    traj.object(1).set_mask(1, disk(30, 40, 10, 10, 4))
    twin = traj.copy()
    twin.object(1).boxes[0][0] = 7
    twin.object(1).set_mask(2, disk(30, 40, 20, 10, 4))
    twin.objects.append(ObjectTrack(id=9))
    twin.caption = "other"
    assert traj.ids == [1] and traj.caption == ""
    assert traj.object(1).boxes[0][0] == 2 and sorted(traj.object(1).masks) == [1]
    np.testing.assert_array_equal(traj.object(1).mask(1), disk(30, 40, 10, 10, 4))


def test_from_dict_defaults(tmp_path, monkeypatch):
    """Without a source, messages name "trajectory"; without a caption it is ""; mask paths are
    relative to the working folder unless base_dir says otherwise."""
    traj = from_dict(small_spec())
    assert traj.source == "" and traj.caption == "" and traj.where() == "trajectory"
    with pytest.raises(TrajectoryError, match=exact("trajectory: no objects")):
        from_dict(small_spec(objects=[]))
    m = disk(30, 40, 20, 15, 6)
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
    data = small_spec()
    data["objects"][0]["masks"] = {"1": "m.png"}
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(from_dict(data).object(1).mask(1), m)


def test_trajectory_validate_in_code():
    """A Trajectory built in code is checked as a spec is, its messages naming "trajectory"."""
    ok = Trajectory(width=40, height=30, num_frames=3, objects=[ObjectTrack(id=1, boxes={0: np.array([0, 0, 40, 30.0])})])
    assert ok.validate() is ok
    with pytest.raises(TrajectoryError, match=exact("trajectory: no objects")):
        Trajectory(width=40, height=30, num_frames=3).validate()
    with pytest.raises(TrajectoryError, match=exact("trajectory: 'height' must be a positive integer, got 0")):
        Trajectory(width=40, height=0, num_frames=3, objects=ok.objects).validate()
    with pytest.raises(TrajectoryError, match=exact(
            "trajectory: 'num_frames' 2000 is beyond the limit of 1024 (docs/limits.md)")):
        Trajectory(width=40, height=30, num_frames=2000, objects=ok.objects).validate()
    with pytest.raises(TrajectoryError, match="^x.json: object 1: key frame 3 outside 0..2$"):
        Trajectory(width=40, height=30, num_frames=3, objects=[ObjectTrack(id=1, boxes={3: np.array([0, 0, 4, 3.0])})],
                   source="x.json").validate()


EDGES = st.sampled_from([-1, -0.5, 0, 0.5, 1, 19, 20, 29, 29.5, 30, 30.5, 39, 40, 40.5, 41])


@settings(max_examples=80, deadline=None)
@given(EDGES, EDGES, EDGES, EDGES)
@example(0, 0, 40, 30)  # the whole frame
@example(5, 0, 5, 30)  # no width
@example(0, 5, 40, 5)  # no height
def test_validate_box_bounds(x0, y0, x1, y1):
    """A box is valid when 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height (40x30)."""
    data = small_spec()
    data["objects"][0]["boxes"] = {"1": [x0, y0, x1, y1]}
    if 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 30:
        np.testing.assert_array_equal(from_dict(data).object(1).boxes[1], [x0, y0, x1, y1])
    else:
        with pytest.raises(TrajectoryError, match=r"^trajectory: object 1 frame 1: box .* must have "
                                                  r"0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 30$"):
            from_dict(data)


def test_smallest_spec():
    """1 pixel, 1 frame: the smallest sizes are positive integers like any other."""
    data = {"version": 1, "width": 1, "height": 1, "num_frames": 1,
            "objects": [{"id": 1, "boxes": {"0": [0, 0, 1, 1]}, "masks": {"0": {"size": [1, 1], "counts": [0, 1]}}}]}
    traj = from_dict(data)
    assert traj.size == (1, 1) and traj.num_frames == 1
    np.testing.assert_array_equal(traj.object(1).mask(0), [[True]])


@pytest.mark.parametrize("value", ["w" * 38, "w" * 39, list(range(30)), 10.0 ** 300 * 7])
def test_values_in_messages_are_cut_short(value):
    """A bad value is quoted whole when its repr has at most 40 characters, else its first 37 and "..."."""
    text = repr(value)
    shown = text if len(text) <= 40 else text[:37] + "..."
    with pytest.raises(TrajectoryError, match=exact(f"trajectory: 'width' must be a positive integer, got {shown}")):
        from_dict(small_spec(width=value))


@pytest.mark.parametrize("key", ["width", "height", "num_frames"])
def test_sizes_of_one_are_positive(key):
    data = small_spec(**{key: 1})
    data["objects"][0]["boxes"] = {"0": [0, 0, 1, 1]}
    assert getattr(from_dict(data), key) == 1


def test_frame_and_object_limits(tmp_path):
    """docs/limits.md: up to 1024 frames and 255 objects; the message names the file."""
    assert from_dict(small_spec(num_frames=1024)).num_frames == 1024
    many = [{"id": i + 1, "boxes": {"0": [0, 0, 4, 4]}} for i in range(256)]
    assert len(from_dict(small_spec(objects=many[:255])).objects) == 255
    path = tmp_path / "spec.json"
    for data, message in [
        (small_spec(num_frames=1025), "'num_frames' 1025 is beyond the limit of 1024 (docs/limits.md)"),
        (small_spec(objects=many), "256 objects, beyond the limit of 255 (docs/limits.md)"),
        (small_spec(width=9000), "size 9000x30 is beyond the limit of 8192 pixels a side and 67108864 pixels in all "
                                 "(docs/limits.md)"),
        (small_spec(width=8192, height=8192, num_frames=17),
         "17 frames of 8192x8192 is beyond the limit of 1073741824 pixels per video (docs/limits.md)"),
    ]:
        path.write_text(json.dumps(data))
        with pytest.raises(TrajectoryError, match=exact(f"{path}: {message}")):
            load(path)


def test_frame_keys_from_python():
    """A spec built in Python may key frames by int (NumPy's too); a bool is no frame."""
    data = small_spec()
    data["objects"][0]["boxes"] = {0: [2, 3, 12, 9], np.int64(2): [4, 3, 14, 9]}
    data["objects"][0]["masks"] = {np.int32(1): {"size": [30, 40], "counts": [1200]}}
    obj = from_dict(data).object(1)
    assert sorted(obj.boxes) == [0, 2] and sorted(obj.masks) == [1]
    data["objects"][0]["boxes"] = {True: [2, 3, 12, 9]}
    with pytest.raises(TrajectoryError, match=exact("trajectory: object 1: key frame True is not an integer")):
        from_dict(data)
    data["objects"][0]["boxes"] = {}
    data["objects"][0]["masks"] = {"one": {"size": [30, 40], "counts": [1200]}}
    with pytest.raises(TrajectoryError, match=exact("s.json: object 1: key frame 'one' is not an integer")):
        from_dict(data, source="s.json")


@pytest.mark.parametrize("v, message", [
    (1e8, "must be in -10000000.0..10000000.0, got 100000000.0"),
    (-1e8, "must be in -10000000.0..10000000.0, got -100000000.0"),
    (float("nan"), "must be a finite number, got nan"),
    (float("inf"), "must be a finite number, got inf"),
])
def test_box_coordinate_limits(v, message):
    data = small_spec()
    data["objects"][0]["boxes"] = {"2": [0, 0, v, 5]}
    with pytest.raises(TrajectoryError, match=exact(f"trajectory: object 1 frame 2: a box coordinate {message}")):
        from_dict(data)


def test_load_refuses_a_huge_file_unread(tmp_path):
    """A file larger than any spec (docs/limits.md: 256 MiB) is refused from its size (a sparse file here)."""
    path = tmp_path / "spec.json"
    with open(path, "wb") as f:
        f.truncate(257 * 2**20)
    with pytest.raises(TrajectoryError, match=exact(f"{path}: larger than 256 MiB, not a spec")):
        load(path)


def test_to_dict_rounds_boxes_and_keeps_str_counts():
    """Box coordinates are written to 4 decimals (integers without a point); RLE counts held as str
    (as pycocotools' JSON has them) are written as they are."""
    m = disk(30, 40, 20, 15, 6)
    counts = encode_mask(m)["counts"].decode()
    traj = Trajectory(width=40, height=30, num_frames=2, objects=[ObjectTrack(
        id=1, boxes={0: np.array([1.23456789, 2.0, 30.00004, 9.99996])}, masks={1: {"size": [30, 40], "counts": counts}})])
    od = to_dict(traj)["objects"][0]
    assert od["boxes"]["0"] == [1.2346, 2, 30.0, 10.0] and isinstance(od["boxes"]["0"][1], int)
    assert od["masks"]["1"] == {"size": [30, 40], "counts": counts}
    np.testing.assert_array_equal(from_dict(to_dict(traj)).object(1).mask(1), m)


def test_dumps_layout():
    """The file a user reads: one key per line indented by one space, number lists on one line."""
    traj = Trajectory(width=8, height=6, num_frames=2, caption="c")
    obj = ObjectTrack(id=2, label="a", boxes={0: np.array([1, 2, 3.5, 4])})
    obj.set_mask(1, np.eye(6, 8, dtype=bool))
    traj.objects = [obj]
    assert dumps(to_dict(traj)) == """{
 "version": 1,
 "width": 8,
 "height": 6,
 "num_frames": 2,
 "caption": "c",
 "objects": [
  {
   "id": 2,
   "label": "a",
   "boxes": {
    "0": [1, 2, 3.5, 4]
   },
   "masks": {
    "1": {
     "size": [6, 8],
     "counts": "%s"
    }
   }
  }
 ]
}
""" % encode_mask(np.eye(6, 8, dtype=bool))["counts"].decode()
