"""Trajectories from label images (`trajectory/label_masks.py`): label videos in memory and folders of
mask PNGs as DAVIS and SAM tools write them (palette, grey, 16-bit and rendered RGB PNGs, written here
by Pillow), their frame numbering, size rounding and one-line errors."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from magicmotion.errors import TrajectoryError
from magicmotion.limits import MAX_FRAMES
from magicmotion.trajectory import PALETTE, from_label_masks, from_mask_frames, load, save

SETTINGS = dict(max_examples=15, deadline=None)


def write_label_png(path, labels: np.ndarray, mode: str = "P") -> None:
    """Object ids (H, W) -> a mask PNG as a user's tool writes it: "P" (DAVIS: index into the palette),
    "L" (grey), "I;16" (16-bit grey), "RGB" (the palette's colours, as a rendered mask map)."""
    if mode == "P":
        im = Image.fromarray(labels.astype(np.uint8), "P")
        im.putpalette(PALETTE.tobytes())
    elif mode == "RGB":
        im = Image.fromarray(PALETTE[labels], "RGB")
    elif mode == "I;16":
        im = Image.fromarray(labels.astype(np.uint16))
    else:
        im = Image.fromarray(labels.astype(np.uint8), mode)
    assert im.mode == mode
    im.save(path)


def blank(h: int = 20, w: int = 30, oid: int = 1) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[2:6, 3:9] = oid
    return labels


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


# ---------------------------------------------------------------------------------------- in memory


def test_from_label_masks_names_objects_from_labels_by_id(tmp_path):
    labels = np.zeros((2, 10, 12), np.int64)
    labels[:, 1:4, 2:5] = 1
    labels[1, 5:9, 6:12] = 2
    traj = from_label_masks(labels, labels_by_id={1: "dog", 7: "cat"})
    assert [(o.id, o.label) for o in traj.objects] == [(1, "dog"), (2, "")]  # 2 has no name: ""
    assert (traj.caption, traj.source) == ("", "")  # no caption unless given: it would be the prompt
    save(traj, tmp_path / "spec.json")
    back = load(tmp_path / "spec.json")
    assert [(o.id, o.label) for o in back.objects] == [(1, "dog"), (2, "")] and back.caption == ""


def test_from_label_masks_bad_shapes_name_the_source():
    with pytest.raises(TrajectoryError, match=exactly("labels: label masks must be (T, H, W) with T >= 1, got (4, 5)")):
        from_label_masks(np.zeros((4, 5), np.int64))
    with pytest.raises(TrajectoryError, match=exactly("clip.npy: label masks must be (T, H, W) with T >= 1, "
                                                      "got (0, 4, 5)")):
        from_label_masks(np.zeros((0, 4, 5), np.int64), source="clip.npy")  # no frame: no trajectory
    with pytest.raises(TrajectoryError, match=exactly("labels: 1 frame numbers for 2 label images")):
        from_label_masks(np.ones((2, 4, 5), np.int64), frames=[3])  # not silently the first image only


# ---------------------------------------------------------------------------------------- PNG kinds


@settings(**SETTINGS)
@given(ids=st.lists(st.integers(1, 255), min_size=1, max_size=4, unique=True), seed=st.integers(0, 2**16))
def test_every_png_kind_reads_the_same_ids(tmp_path_factory, ids, seed):
    """The same label image written as a palette, a grey, a 16-bit and a rendered RGB PNG (Pillow)
    reads back as the same objects with the same masks; ids cover the whole palette (green and blue
    channels too: an RGB colour is read by all three channels)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([0, *ids]), size=(9, 11)).astype(np.int64)
    labels[0, 0] = ids[0]
    got = {}
    for mode in ("P", "L", "I;16", "RGB"):
        folder = tmp_path_factory.mktemp(mode.replace(";", ""))
        write_label_png(folder / "00000.png", labels, mode)
        traj = from_mask_frames(folder, fill="none")
        got[mode] = {o.id: o.mask(0) for o in traj.objects}
    for mode, masks in got.items():
        assert sorted(masks) == sorted(int(i) for i in np.unique(labels) if i > 0), mode
        for oid, m in masks.items():
            np.testing.assert_array_equal(m, labels == oid, err_msg=f"{mode} id {oid}")


def test_sixteen_bit_ids_beyond_255(tmp_path):
    labels = np.zeros((12, 16), np.int64)
    labels[1:5, 2:6], labels[6:10, 8:14] = 300, 65535
    write_label_png(tmp_path / "00000.png", labels, "I;16")
    traj = from_mask_frames(tmp_path)
    assert traj.ids == [300, 65535]
    np.testing.assert_array_equal(traj.object(65535).boxes[0], [8, 6, 14, 10])


def test_real_davis_masks_read_the_same_as_their_rgb_rendering(real_samples, tmp_path):
    """The real judo masks (palette PNGs) and Pillow's RGB conversion of them through their own palette
    give the same trajectory: our palette is the DAVIS one, green and blue included (ids 2 and 4)."""
    source = real_samples / "masks" / "judo"
    for p in source.glob("*.png"):
        with Image.open(p) as im:
            im.convert("RGB").save(tmp_path / p.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 00005.png is a pixel narrower than the others
        palette, rgb = from_mask_frames(source, fill="none"), from_mask_frames(tmp_path, fill="none")
    assert palette.ids == rgb.ids == [1, 2, 3, 4]
    for a, b in zip(palette.objects, rgb.objects):
        assert sorted(a.masks) == sorted(b.masks) == [0, 5, 8, 13]
        for t in a.masks:
            np.testing.assert_array_equal(a.mask(t), b.mask(t))


def test_rgb_colour_outside_the_palette_is_named(tmp_path):
    rgb = PALETTE[blank()]
    rgb[3, 7] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "00000.png")
    with pytest.raises(TrajectoryError, match=exactly(f"{tmp_path / '00000.png'}: pixel (x=7, y=3) has colour "
                                                      "(1, 2, 3), which is not an object colour of the palette")):
        from_mask_frames(tmp_path)


# ---------------------------------------------------------------------------------------- frame numbers


def test_frame_numbers_from_names(tmp_path):
    """The last number in a name is its frame (mask12_v2.png: 2); names without a number take their
    place in the sorted listing."""
    write_label_png(tmp_path / "mask12_v2.png", blank())
    write_label_png(tmp_path / "frame_4.png", blank(oid=2))
    assert {o.id: sorted(o.boxes) for o in from_mask_frames(tmp_path, fill="none").objects} == {1: [2], 2: [4]}
    named = tmp_path / "named"
    named.mkdir()
    write_label_png(named / "first.png", blank())
    write_label_png(named / "second.png", blank(oid=2))
    traj = from_mask_frames(named, fill="none")
    assert traj.num_frames == 2 and {o.id: sorted(o.boxes) for o in traj.objects} == {1: [0], 2: [1]}


def test_two_files_for_one_frame_are_named(tmp_path):
    for name in ("00000.png", "00003.png", "frame_3.png"):
        write_label_png(tmp_path / name, blank())
    with pytest.raises(TrajectoryError, match=exactly(f"{tmp_path}: 00003.png and frame_3.png are both frame 3")):
        from_mask_frames(tmp_path)


def test_frame_numbers_at_the_limits(tmp_path):
    write_label_png(tmp_path / "00000.png", blank(4, 4))
    write_label_png(tmp_path / f"{MAX_FRAMES - 1:05d}.png", blank(4, 4))
    assert from_mask_frames(tmp_path, fill="none").num_frames == MAX_FRAMES  # the last frame allowed
    (tmp_path / f"{MAX_FRAMES - 1:05d}.png").rename(tmp_path / f"{MAX_FRAMES:05d}.png")
    last = tmp_path / f"{MAX_FRAMES:05d}.png"
    with pytest.raises(TrajectoryError, match=exactly(f"{last}: frame {MAX_FRAMES} is beyond the limit of "
                                                      f"{MAX_FRAMES} frames (docs/limits.md); are the files "
                                                      "numbered by frame?")):
        from_mask_frames(tmp_path)
    last.unlink()
    write_label_png(tmp_path / "00003.png", blank(4, 4))
    assert from_mask_frames(tmp_path, num_frames=4).num_frames == 4
    with pytest.raises(TrajectoryError, match=exactly(f"{tmp_path / '00003.png'}: frame 3 outside 0..2")):
        from_mask_frames(tmp_path, num_frames=3)


def test_unknown_fill_and_annotation_are_named_before_reading(tmp_path):
    (tmp_path / "00000.png").write_bytes(b"not a png")  # not read: the option is wrong first
    with pytest.raises(TrajectoryError, match=exactly(f"{tmp_path}: unknown fill 'blur': expected one of "
                                                      "shift, box, hold, none")):
        from_mask_frames(tmp_path, fill="blur")
    with pytest.raises(TrajectoryError, match=exactly(f"{tmp_path}: unknown annotation 'full': expected one of "
                                                      "auto, complete, incremental")):
        from_mask_frames(tmp_path, annotation="full")


# ---------------------------------------------------------------------------------------- sizes


def read_sizes(folder, sizes):
    """Masks of `sizes` (H, W) as 00000.png, 00001.png, ... -> (the trajectory, the warnings' texts)."""
    folder.mkdir()
    for t, (h, w) in enumerate(sizes):
        write_label_png(folder / f"{t:05d}.png", blank(h, w))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = from_mask_frames(folder, fill="none")
    return traj, [str(c.message) for c in caught]


def test_the_most_common_size_is_the_reference(tmp_path):
    traj, said = read_sizes(tmp_path / "common", [(20, 100), (20, 99), (20, 99)])
    assert (traj.width, traj.height) == (99, 20)
    assert said == [f"{tmp_path / 'common' / '00000.png'}: size 100x20 differs from the other masks' 99x20; resized"]
    np.testing.assert_array_equal(traj.object(1).mask(0), blank(20, 99) == 1)  # nearest neighbour: same box
    traj, said = read_sizes(tmp_path / "tie", [(20, 99), (20, 100)])  # a tie: the first file's size
    assert (traj.width, traj.height) == (99, 20) and len(said) == 1 and "00001.png: size 100x20" in said[0]


# (reference H, W), (other H, W), resized (True) or refused: a size within max(2 pixels, 1%) of the
# reference in both directions is rounding; 480x854 is DAVIS's 480p (1% = 4.8 and 8.54 pixels)
SIZES = [
    ((20, 30), (22, 30), True), ((20, 30), (23, 30), False), ((20, 30), (40, 30), False),
    ((20, 30), (20, 32), True), ((20, 30), (20, 33), False), ((20, 30), (20, 60), False),
    ((480, 854), (484, 854), True), ((480, 854), (485, 854), False),
    ((480, 854), (480, 862), True), ((480, 854), (480, 863), False), ((480, 854), (478, 846), True),
]


@pytest.mark.parametrize("reference, other, resized", SIZES, ids=[f"{r}-{o}" for r, o, _ in SIZES])
def test_size_rounding_tolerance(tmp_path, reference, other, resized):
    folder = tmp_path / "m"
    if resized:
        traj, said = read_sizes(folder, [reference, other, reference])
        assert (traj.height, traj.width) == reference and len(said) == 1
        assert traj.object(1).mask(1).shape == reference
    else:
        (h, w), (ah, aw) = reference, other
        with pytest.raises(TrajectoryError, match=exactly(f"{folder / '00001.png'}: size {aw}x{ah} differs from "
                                                          f"the other masks' {w}x{h}")):
            read_sizes(folder, [reference, other, reference])
