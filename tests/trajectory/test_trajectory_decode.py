"""Trajectory maps -> spec (`from_maps`, `decode_maps`, `load_maps`, `trajectory from-maps`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from magicmotion.cli import main
from magicmotion.data.synthetic import SyntheticWorld
from magicmotion.errors import TrajectoryError
from magicmotion.io import write_frames, write_video
from magicmotion.trajectory import (decode_maps, from_label_masks, from_maps, load, load_maps,
                                    palette_color, render, sparsify)
from magicmotion.trajectory.decode import detect_palette, outline_pixels

SMALL_W, SMALL_H = 400, 304  # outlines 3 px: the thinnest that H.264 keeps readable in voc colours


def synthetic_spec(size=(240, 160), frames=17, objects=(1, 3), seed=0, kind="box"):
    """A spec of 1..3 synthetic objects moving (masks on every frame; sparse: 4 key boxes)."""
    world = SyntheticWorld(size=size, num_frames=frames, min_objects=objects[0], max_objects=objects[1])
    _, labels, _, _ = world.sample(np.random.default_rng(seed))
    traj = from_label_masks(labels)
    return sparsify(traj, num_keys=4) if kind == "sparse_box" else traj


def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def check_recovered(truth, back, kind, min_iou=0.95):
    """Same objects; masks (mask kind: all frames; else frame 0) and boxes (frames 1..) close."""
    assert back.ids == truth.ids
    assert (back.width, back.height, back.num_frames) == (truth.width, truth.height, truth.num_frames)
    for o, b in zip(truth.objects, back.objects):
        mask_frames = range(truth.num_frames) if kind == "mask" else [0]
        for t in mask_frames:
            m = o.mask(t)
            if m is None or not m.any():
                assert b.mask_area(t) == 0
                continue
            mb = b.mask(t)
            assert (m & mb).sum() / (m | mb).sum() >= min_iou, (o.id, t)
        if kind == "mask":
            continue
        for t in range(1, truth.num_frames):
            if kind == "sparse_box":
                expected = o.boxes.get(t)
            else:
                expected = o.boxes.get(t) if o.mask_area(t) else None
            if expected is None:
                assert t not in b.boxes, (o.id, t)
            else:
                assert box_iou(expected, b.boxes[t]) >= min_iou, (o.id, t, expected, b.boxes[t])


# ------------------------------------------------------------------------------------ lossless


@pytest.mark.parametrize("palette", ["voc", "release"])
@pytest.mark.parametrize("kind", ["mask", "box", "sparse_box"])
def test_lossless_round_trip_renders_the_same_maps(kind, palette):
    truth = synthetic_spec(objects=(3, 3), seed=3, kind=kind)
    maps = render(truth, kind, palette=palette)
    decoded = decode_maps(maps)
    assert (decoded.kind, decoded.palette) == (kind, palette)
    np.testing.assert_array_equal(render(decoded.trajectory, kind, palette=palette), maps)
    check_recovered(truth, decoded.trajectory, kind, min_iou=0.99)


# ------------------------------------------------------------------------------ through H.264


@pytest.mark.parametrize("palette", ["voc", "release"])
def test_h264_720x480_49_frames(tmp_path, palette):
    kind = "box" if palette == "release" else "mask"
    truth = synthetic_spec(size=(720, 480), frames=49, objects=(3, 3), seed=1, kind=kind)
    write_video(tmp_path / "maps.mp4", render(truth, kind, palette=palette))
    decoded = decode_maps(load_maps(tmp_path / "maps.mp4"))  # palette and kind detected
    assert (decoded.kind, decoded.palette) == (kind, palette)
    check_recovered(truth, decoded.trajectory, kind)


@pytest.mark.parametrize("palette", ["voc", "release"])
@pytest.mark.parametrize("kind", ["mask", "box", "sparse_box"])
def test_h264_small(tmp_path, kind, palette):
    truth = synthetic_spec(size=(SMALL_W, SMALL_H), frames=13, objects=(1, 3), seed=7, kind=kind)
    write_video(tmp_path / "maps.mp4", render(truth, kind, palette=palette))
    decoded = decode_maps(load_maps(tmp_path / "maps.mp4"))
    assert (decoded.kind, decoded.palette) == (kind, palette)
    check_recovered(truth, decoded.trajectory, kind)
    # given kind and palette read the same
    again = from_maps(load_maps(tmp_path / "maps.mp4"), kind=kind, palette=palette)
    assert again.ids == decoded.trajectory.ids


def test_png_folder_and_cli(tmp_path, capsys):
    truth = synthetic_spec(objects=(2, 2), seed=5, kind="sparse_box")
    maps = render(truth, "sparse_box", palette="release")
    write_frames(tmp_path / "maps", maps)
    np.testing.assert_array_equal(load_maps(tmp_path / "maps"), maps)
    out = tmp_path / "spec.json"
    assert main(["trajectory", "from-maps", str(tmp_path / "maps"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sparse_box maps, palette release" in printed and "ids 1, 2" in printed
    back = load(out)
    np.testing.assert_array_equal(render(back, "sparse_box", palette="release"), maps)
    assert json.loads(out.read_text())["version"] == 1
    # a forced kind and palette
    assert main(["trajectory", "from-maps", str(tmp_path / "maps"), "--out", str(out), "--kind",
                 "sparse_box", "--palette", "release"]) == 0


# --------------------------------------------------------------------------------------- errors


def test_no_objects(tmp_path, capsys):
    write_frames(tmp_path / "black", np.zeros((3, 32, 48, 3), np.uint8))
    with pytest.raises(TrajectoryError, match="black: no objects found"):
        from_maps(load_maps(tmp_path / "black"), source=str(tmp_path / "black"))
    assert main(["trajectory", "from-maps", str(tmp_path / "black"), "--out", str(tmp_path / "s.json")]) == 2
    assert "no objects found" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_foreign_colour_dominating_names_file_and_frame():
    maps = np.zeros((3, 40, 60, 3), np.uint8)
    maps[0, 5:15, 5:15] = palette_color(1)
    maps[1, 5:35, 5:55] = (255, 255, 255)  # white: no palette colour
    maps[1, 5:10, 5:10] = palette_color(1)
    with pytest.raises(TrajectoryError) as e:
        from_maps(maps, source="clip.mp4")
    # 1475 of the 1500 non-black pixels of frame 1 are white, named at its 8-level bin's middle
    assert str(e.value) == ("clip.mp4: frame 1: 98% of the non-black pixels are no colour of the palette "
                            "(mostly about (252, 252, 252)); not trajectory maps of this palette")


@pytest.mark.parametrize("white", [(slice(5, 9), slice(40, 43)), (slice(5, 35), slice(36, 52))])
def test_foreign_colour_on_few_pixels_or_under_half_is_read_past(white):
    """A foreign colour on under 16 pixels (12 here: a logo's speck), or on under half a frame's non-black
    pixels (480 of 1380), is not a reason to refuse maps; object 1 is read on every frame."""
    maps = np.zeros((3, 40, 60, 3), np.uint8)
    maps[:, 5:35, 5:35] = palette_color(1)
    maps[1, white[0], white[1]] = (255, 255, 255)
    with pytest.warns(UserWarning, match="lossy"):  # not exact palette colours: read as lossy maps
        traj = from_maps(maps, kind="mask")
    assert traj.ids == [1] and [traj.object(1).mask_area(t) for t in (0, 2)] == [900, 900]


def test_bad_input():
    with pytest.raises(TrajectoryError, match="uint8 \\(T, H, W, 3\\)"):
        from_maps(np.zeros((2, 8, 8), np.uint8))
    maps = np.zeros((2, 16, 16, 3), np.uint8)
    maps[:, 2:8, 2:8] = palette_color(1)
    with pytest.raises(TrajectoryError, match="unknown kind"):
        from_maps(maps, kind="boxes")
    with pytest.raises(TrajectoryError, match="unknown palette"):
        from_maps(maps, palette="davis")


def test_mixed_filled_and_outlines_is_an_error_unless_kind_given():
    maps = np.zeros((3, 60, 80, 3), np.uint8)
    maps[:, 5:25, 5:25] = palette_color(1)  # filled on every frame: half the shapes of frames 1, 2
    maps[0, 30:50, 40:70] = palette_color(2)
    maps[1:, 30:50, 40:70] = palette_color(2)
    maps[1:, 31:49, 41:69] = 0  # an outline on frames 1, 2
    with pytest.raises(TrajectoryError, match="frame 1: object 1 is a filled shape but object 2"):
        from_maps(maps)
    traj = from_maps(maps, kind="box")
    assert traj.object(2).boxes[1].tolist() == [40, 30, 70, 50]
    assert traj.object(1).boxes[2].tolist() == [5, 5, 25, 25]


def test_single_frame_is_a_mask_and_solid_small_boxes():
    maps = np.zeros((1, 20, 30, 3), np.uint8)
    maps[0, 2:6, 3:9] = palette_color(4)
    decoded = decode_maps(maps)
    assert decoded.kind == "mask" and decoded.trajectory.ids == [4]
    # a box too small to have an inside reads as a box among box frames
    maps = np.zeros((3, 20, 30, 3), np.uint8)
    maps[0, 2:6, 3:9] = palette_color(4)
    maps[1, 10:18, 10:25] = palette_color(4)
    maps[1, 11:17, 11:24] = 0
    maps[2, 2:4, 3:5] = palette_color(4)  # the outline of a 2x2 box at thickness 1: solid
    decoded = decode_maps(maps)
    assert decoded.kind == "box"
    np.testing.assert_array_equal(render(decoded.trajectory, "box"), maps)


def test_from_maps_without_a_source_names_maps_and_records_none():
    """from_maps(maps) with no source: errors say "maps:", and the spec's source stays empty."""
    with pytest.raises(TrajectoryError, match=r"^maps: no objects found"):
        from_maps(np.zeros((2, 16, 16, 3), np.uint8))
    assert from_maps(render(synthetic_spec(size=(64, 48), frames=3), "mask")).source == ""


@pytest.mark.parametrize("thickness", [1, 2, 3, 4])
def test_outline_pixels_drops_slivers_but_keeps_outline_bands(thickness):
    """An object's pixels on a lossy box frame: its outline band (cv2.rectangle, `thickness` px) plus
    the 1-px sliver another object's blurred edge leaves in its colour. From 3 px (what lossy video
    keeps) the sliver goes and the band stays whole; thinner outlines are left as they are, and so is
    a mask of slivers only (nothing to tell them from)."""
    import cv2

    band = np.zeros((60, 80), np.uint8)
    cv2.rectangle(band, (10, 8), (60, 50), 1, thickness)
    band = band.astype(bool)
    sliver = np.zeros_like(band)
    sliver[20:40, 70] = True   # a 1-px line, apart from the band
    sliver[30, 62:70] = True   # and one touching its right side
    got = outline_pixels(band | sliver, thickness)
    np.testing.assert_array_equal(got, band if thickness >= 3 else band | sliver)
    np.testing.assert_array_equal(outline_pixels(sliver, thickness), sliver)


def _drawn_maps(shapes, size=(80, 60)):
    """Lossless voc maps drawn with OpenCV: per frame, "F" a filled box of object 1, "O" its 1-px
    outline (the voc style at thickness 1: a band just inside the box), "S" a 2x2 box, "-" nothing."""
    import cv2

    maps = np.zeros((len(shapes), size[1], size[0], 3), np.uint8)
    for t, s in enumerate(shapes):
        x0, y0 = 10 + 2 * t, 12 + t
        if s == "S":  # a 2x2 box: its outline is solid (no inside)
            cv2.rectangle(maps[t], (x0, y0), (x0 + 1, y0 + 1), palette_color(1), -1)
        elif s != "-":
            cv2.rectangle(maps[t], (x0, y0), (x0 + 29, y0 + 19), palette_color(1), -1 if s == "F" else 1)
    return maps


@pytest.mark.parametrize("shapes,kind", [
    ("F" + "O" * 9 + "F", "box"),          # 1 filled of 10 later shapes: outvoted
    ("F" + "F" * 9 + "O", "mask"),         # 1 outline of 10: outvoted
    ("F" + "O" * 8 + "FF", None),          # 2 of 10 filled: neither kind
    ("F" + "O" * 8 + "-O", "sparse_box"),  # an empty frame among outlines
    ("F" + "F" * 8 + "-F", "mask"),        # an empty frame among masks: an absent object
    ("F" + "O" + "S" * 9, "box"),          # boxes too small for an inside vote for neither kind
    ("F-" + "O" * 9, "sparse_box"),        # frame 1 empty
    ("-" + "O" * 10, "box"),               # frame 0 empty (an object coming in): every later frame has a box
])
def test_kind_is_voted_over_the_later_frames(shapes, kind):
    """Frames 1.. vote for the kind; up to a tenth of the shapes read the other way are outvoted (a
    hidden object's rim can look like an outline), more is an error naming one shape of each; a box
    too small to have an inside could be either, and does not vote."""
    maps = _drawn_maps(shapes)
    if kind is None:
        with pytest.raises(TrajectoryError) as e:
            decode_maps(maps, source="v.mp4")
        assert str(e.value) == ("v.mp4: frame 9: object 1 is a filled shape but object 1 on frame 1 is a "
                                "box outline; maps of one kind have either (pass kind=)")
        return
    decoded = decode_maps(maps)
    assert decoded.kind == kind
    if kind != "mask":
        o = decoded.trajectory.object(1)
        for t, s in enumerate(shapes):
            assert (t in o.boxes) == (s != "-"), t
        if shapes[1] == "O":
            assert o.boxes[1].tolist() == [12, 13, 42, 33]


@pytest.mark.parametrize("palette", ["voc", "release"])
def test_detect_palette_names_the_palette_maps_were_drawn_in(tmp_path, palette):
    """Mask and box maps drawn in either palette are told apart, exact and (masks) through H.264 at a
    low quality (crf 30); 25 frames (every 2nd is looked at); all-black maps are refused, named as
    "maps" unless a source is given. (1-px box outlines through H.264, outside the envelope, lose
    their colour: release box maps at 96x64 read as voc.)"""
    from magicdata_replica import write_h264

    spec = synthetic_spec(size=(96, 64), frames=25, objects=(2, 3), seed=3)
    for kind in ("box", "mask"):
        maps = render(spec, kind, palette=palette)
        assert detect_palette(maps) == palette
    write_h264(tmp_path / "mask.mp4", maps, 30)
    assert detect_palette(load_maps(tmp_path / "mask.mp4")) == palette
    big = np.zeros((1, 640, 660, 3), np.uint8)  # 422,400 non-black pixels: a subsample is looked at
    big[:, :, 20:] = palette_color(4, palette)
    assert detect_palette(big) == palette
    with pytest.raises(TrajectoryError, match=r"^maps: no objects found"):
        detect_palette(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(TrajectoryError, match=r"^b.mp4: no objects found"):
        detect_palette(np.zeros((2, 8, 8, 3), np.uint8), "b.mp4")


def test_an_object_that_comes_in_after_a_black_frame_0_is_read():
    """Two frames, frame 0 black and object 3 on frame 1: read (as masks, empty on frame 0), not
    "every frame is black"."""
    maps = np.zeros((2, 24, 32, 3), np.uint8)
    maps[1, 4:14, 6:20] = palette_color(3)
    decoded = decode_maps(maps)
    assert decoded.kind == "mask" and decoded.palette == "voc" and decoded.trajectory.ids == [3]
    np.testing.assert_array_equal(render(decoded.trajectory, "mask"), maps)
