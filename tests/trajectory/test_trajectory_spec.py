"""The JSON spec: reading boxes and masks (PNG paths, RLE), writing it back, RLE helpers, DAVIS-style
mask folders and the palette."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import disk
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
