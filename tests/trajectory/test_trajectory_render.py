"""Rendering trajectory maps pixel by pixel on small cases, and the spec -> maps -> spec round trip."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import disk

from magicmotion.errors import TrajectoryError
from magicmotion.io import write_frames
from magicmotion.trajectory import (KINDS, ObjectTrack, Trajectory, box_thickness, from_mask_frames,
                                    interpolate_boxes, load, masks_to_boxes, palette_color,
                                    preview_frames, render, rescale, resize_crop, save)

RED, GREEN = palette_color(1), palette_color(2)


def colours_in(maps: np.ndarray) -> set[tuple[int, int, int]]:
    """The distinct (r, g, b) colours in uint8 maps (..., 3)."""
    packed = maps.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    return {(int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255) for k in np.unique(packed)}


def outline(h, w, x0, y0, x1, y1, thickness=1) -> np.ndarray:
    """bool (h, w): the pixels of an outlined box [x0, x1) x [y0, y1), listed one by one."""
    out = np.zeros((h, w), bool)
    for y in range(y0, y1):
        for x in range(x0, x1):
            if x < x0 + thickness or x >= x1 - thickness or y < y0 + thickness or y >= y1 - thickness:
                out[y, x] = True
    return out


def paint(h, w, *layers) -> np.ndarray:
    """uint8 (h, w, 3): bool layers (mask, colour) painted in order on black."""
    frame = np.zeros((h, w, 3), np.uint8)
    for mask, colour in layers:
        frame[mask] = colour
    return frame


def filled(h, w, x0, y0, x1, y1) -> np.ndarray:
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = True
    return out


def test_thickness():
    assert box_thickness(30, 20) == 1
    assert box_thickness(720, 480) == 4
    assert box_thickness(64, 64) == 1
    assert box_thickness(300, 200) == 2


def test_box_outline_pixel_by_pixel():
    traj = Trajectory(width=30, height=20, num_frames=3)
    o = ObjectTrack(id=1, boxes={0: np.array([2, 3, 12, 9.0]), 1: np.array([2, 3, 12, 9.0]),
                                 2: np.array([0, 0, 30, 20.0])})
    traj.objects.append(o)
    maps = render(traj, "box")
    assert maps.shape == (3, 20, 30, 3) and maps.dtype == np.uint8
    # frame 0 without a mask: the filled box
    np.testing.assert_array_equal(maps[0], paint(20, 30, (filled(20, 30, 2, 3, 12, 9), RED)))
    # frame 1: exactly the outline pixels, in the object's colour, nothing else
    np.testing.assert_array_equal(maps[1], paint(20, 30, (outline(20, 30, 2, 3, 12, 9), RED)))
    assert (maps[1].any(axis=2)).sum() == 2 * 10 + 2 * 6 - 4
    # a box on the frame's edges
    np.testing.assert_array_equal(maps[2], paint(20, 30, (outline(20, 30, 0, 0, 30, 20), RED)))


def test_box_thickness_two_and_rounding():
    h, w = 200, 300  # thickness min(200, 300) // 100 = 2
    traj = Trajectory(width=w, height=h, num_frames=2)
    traj.objects.append(ObjectTrack(id=2, boxes={1: np.array([10.4, 20.5, 50.6, 60.49])}))
    maps = render(traj, "box")
    # coordinates round half up: [10, 21, 51, 60)
    np.testing.assert_array_equal(maps[1], paint(h, w, (outline(h, w, 10, 21, 51, 60, 2), GREEN)))


def test_frame_zero_is_the_filled_mask():
    h, w = 20, 30
    m1 = disk(h, w, 8, 8, 4)
    traj = Trajectory(width=w, height=h, num_frames=3)
    a = ObjectTrack(id=1, boxes={0: np.array([4, 4, 13, 13.0]), 2: np.array([15, 5, 25, 15.0])})
    a.set_mask(0, m1)
    b = ObjectTrack(id=2, boxes={0: np.array([18, 12, 28, 19.0])})  # no frame-0 mask: filled box
    traj.objects = [a, b]
    expected0 = paint(h, w, (m1, RED), (filled(h, w, 18, 12, 28, 19), GREEN))
    for kind in ("box", "sparse_box"):
        maps = render(traj, kind)
        np.testing.assert_array_equal(maps[0], expected0)
    box = render(traj, "box")
    # frame 1: a interpolated halfway between its keys [9.5, 4.5, 19, 14] -> [10, 5, 19, 14); b held
    np.testing.assert_array_equal(
        box[1], paint(h, w, (outline(h, w, 10, 5, 19, 14), RED), (outline(h, w, 18, 12, 28, 19), GREEN)))
    np.testing.assert_array_equal(
        box[2], paint(h, w, (outline(h, w, 15, 5, 25, 15), RED), (outline(h, w, 18, 12, 28, 19), GREEN)))


def test_sparse_box_frames_without_keys_are_black():
    h, w = 20, 30
    traj = Trajectory(width=w, height=h, num_frames=5)
    a = ObjectTrack(id=1, boxes={0: np.array([1, 1, 6, 6.0]), 3: np.array([10, 2, 20, 12.0])})
    b = ObjectTrack(id=2, boxes={4: np.array([3, 3, 9, 9.0])})
    b.set_mask(2, filled(h, w, 20, 10, 26, 18))  # a mask on a key frame gives its box
    traj.objects = [a, b]
    maps = render(traj, "sparse_box")
    np.testing.assert_array_equal(maps[0], paint(h, w, (filled(h, w, 1, 1, 6, 6), RED)))
    assert not maps[1].any()
    np.testing.assert_array_equal(maps[2], paint(h, w, (outline(h, w, 20, 10, 26, 18), GREEN)))
    np.testing.assert_array_equal(maps[3], paint(h, w, (outline(h, w, 10, 2, 20, 12), RED)))
    np.testing.assert_array_equal(maps[4], paint(h, w, (outline(h, w, 3, 3, 9, 9), GREEN)))


def test_mask_kind_pixel_by_pixel_later_objects_on_top():
    h, w, T = 24, 32, 4
    traj = Trajectory(width=w, height=h, num_frames=T)
    masks = {1: [disk(h, w, 6 + 4 * t, 10, 5) for t in range(T)],
             7: [disk(h, w, 16, 12, 6) for t in range(T)]}
    masks[7][3] = np.zeros((h, w), bool)  # absent on the last frame
    masks[1][0][0, 0] = True  # a corner pixel (first run of the RLE)
    masks[7][1][h - 1, w - 1] = True  # the last pixel
    for oid in (1, 7):
        o = ObjectTrack(id=oid)
        for t in range(T):
            o.set_mask(t, masks[oid][t])
        traj.objects.append(o)
    maps = render(traj, "mask")
    for t in range(T):
        expected = paint(h, w, (masks[1][t], palette_color(1)), (masks[7][t], palette_color(7)))
        np.testing.assert_array_equal(maps[t], expected)
    assert (maps[2][12, 16] == palette_color(7)).all()  # overlap: the later object wins


def test_box_kind_from_dense_masks():
    h, w = 24, 32
    traj = Trajectory(width=w, height=h, num_frames=3)
    o = ObjectTrack(id=4)
    masks = [disk(h, w, 8 + 6 * t, 12, 4) for t in range(3)]
    for t, m in enumerate(masks):
        o.set_mask(t, m)
    traj.objects.append(o)
    maps = render(traj, "box")
    np.testing.assert_array_equal(maps[0], paint(h, w, (masks[0], palette_color(4))))
    for t in (1, 2):
        ys, xs = np.nonzero(masks[t])
        expected = outline(h, w, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        np.testing.assert_array_equal(maps[t], paint(h, w, (expected, palette_color(4))))


def test_mask_kind_needs_every_frame():
    traj = Trajectory(width=10, height=10, num_frames=3, source="s.json")
    o = ObjectTrack(id=2, boxes={1: np.array([1, 1, 5, 5.0])})
    o.set_mask(0, disk(10, 10, 5, 5, 2))
    o.set_mask(2, disk(10, 10, 5, 5, 2))
    traj.objects.append(o)
    with pytest.raises(TrajectoryError, match=r"s\.json: kind 'mask' needs a mask on every frame; "
                                              r"object 2 has none on frame 1"):
        render(traj, "mask")
    with pytest.raises(TrajectoryError, match="unknown kind 'boxes'"):
        render(traj, "boxes")
    render(traj, "box")  # fine: boxes and masks mix


def test_ids_past_255_wrap_to_a_colour():
    traj = Trajectory(width=10, height=10, num_frames=1)
    o = ObjectTrack(id=257)
    o.set_mask(0, filled(10, 10, 2, 2, 5, 5))
    traj.objects.append(o)
    maps = render(traj, "mask")
    assert tuple(maps[0, 3, 3]) == palette_color(2) == palette_color(257)


def test_render_at_another_size():
    h, w = 30, 40
    traj = Trajectory(width=w, height=h, num_frames=3)
    o = ObjectTrack(id=1, boxes={2: np.array([20, 5, 35, 25.0])})
    for t in range(3):
        o.set_mask(t, disk(h, w, 12 + 5 * t, 15, 6))
    traj.objects.append(o)
    for kind in KINDS:
        maps = render(traj, kind, size=(32, 32))
        assert maps.shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(maps, render(rescale(traj, (32, 32)), kind))


def test_every_kind_is_black_background_and_palette_colours():
    traj = Trajectory(width=48, height=32, num_frames=6)
    for oid, cx in ((1, 10), (2, 24), (3, 38)):
        o = ObjectTrack(id=oid)
        for t in range(6):
            o.set_mask(t, disk(32, 48, cx, 8 + 3 * t, 4))
        traj.objects.append(o)
    traj = masks_to_boxes(traj)
    allowed = {(0, 0, 0), palette_color(1), palette_color(2), palette_color(3)}
    for kind in KINDS:
        maps = render(traj, kind)
        colours = colours_in(maps)
        assert colours == allowed, kind


# ---------------------------------------------------------------------------------- round trips


def test_spec_render_from_masks_spec_round_trip(tmp_path):
    """spec -> mask maps (PNG frames) -> from_mask_frames -> spec: the same objects, masks, boxes."""
    h, w, T = 24, 36, 5
    traj = Trajectory(width=w, height=h, num_frames=T)
    for oid, y in ((1, 6), (2, 17)):
        o = ObjectTrack(id=oid)
        for t in range(T):
            o.set_mask(t, disk(h, w, 5 + 6 * t, y, 3))
        traj.objects.append(o)
    still = ObjectTrack(id=9)  # leaves after frame 2
    for t in range(T):
        still.set_mask(t, filled(h, w, 30, 10, 34, 14) if t < 3 else np.zeros((h, w), bool))
    traj.objects.append(still)
    traj = masks_to_boxes(traj)
    save(traj, tmp_path / "spec.json")
    maps = render(load(tmp_path / "spec.json"), "mask")
    write_frames(tmp_path / "maps", maps)
    back = from_mask_frames(tmp_path / "maps")
    save(back, tmp_path / "back.json")
    again = load(tmp_path / "back.json")
    assert again.ids == traj.ids and again.num_frames == T and again.size == traj.size
    for a, b in zip(traj.objects, again.objects):
        assert sorted(a.boxes) == sorted(b.boxes)
        for t in range(T):
            np.testing.assert_array_equal(a.mask(t), b.mask(t))
            if t in a.boxes:
                np.testing.assert_array_equal(a.boxes[t], b.boxes[t])
    np.testing.assert_array_equal(render(again, "box"), render(traj, "box"))


def test_interpolated_render_matches_dense_render():
    traj = Trajectory(width=40, height=40, num_frames=9)
    traj.objects.append(ObjectTrack(id=3, boxes={0: np.array([2, 2, 10, 10.0]),
                                                  8: np.array([20, 24, 38, 38.0])}))
    np.testing.assert_array_equal(render(traj, "box"), render(interpolate_boxes(traj), "sparse_box"))


# ---------------------------------------------------------------------------------- preview


def test_preview_frames():
    traj = Trajectory(width=40, height=30, num_frames=4)
    traj.objects.append(ObjectTrack(id=1, boxes={0: np.array([2, 2, 10, 10.0]),
                                                  3: np.array([20, 10, 30, 20.0])}))
    image = np.full((60, 100, 3), 90, np.uint8)  # another size and aspect ratio
    image[:, 50:] = 200
    frames, maps = preview_frames(traj, image)
    assert frames.shape == maps.shape == (4, 30, 40, 3)
    np.testing.assert_array_equal(frames[3], resize_crop(image, (40, 30)))
    np.testing.assert_array_equal(maps, render(traj, "box"))
    frames, maps = preview_frames(traj, image, kind="sparse_box", size=(20, 20))
    assert frames.shape == maps.shape == (4, 20, 20, 3)
    assert not maps[1].any() and maps[3].any()
    video = np.stack([np.full((30, 40, 3), 10 * i, np.uint8) for i in range(2)])
    frames, _ = preview_frames(traj, video)  # shorter than the trajectory: the last frame repeats
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 10, 10]


# ------------------------------------------------------------------- gaps found by mutation testing


def test_box_pixels_clip_to_the_frame_and_keep_one_pixel():
    from magicmotion.trajectory.render import box_pixels

    assert box_pixels([200, 300, 400, 500], 64, 48) == (63, 47, 64, 48)  # past the frame: its last pixel
    assert box_pixels([-9, -9, -2, -3], 64, 48) == (0, 0, 1, 1)  # before it: the first pixel
    assert box_pixels([10, 12, 10, 12], 64, 48) == (10, 12, 11, 13)  # empty: one pixel wide and high
    assert box_pixels([10.5, 12.49, 20.5, 30.5], 64, 48) == (11, 12, 21, 31)  # rounded half up


def test_fill_box_fills_exactly_the_box():
    import cv2

    from magicmotion.trajectory.render import fill_box

    frame = np.zeros((20, 30, 3), np.uint8)
    fill_box(frame, [3.4, 5.6, 12.5, 9.5], (10, 20, 30))
    expected = np.zeros_like(frame)
    cv2.rectangle(expected, (3, 6), (12, 9), (10, 20, 30), thickness=-1)  # OpenCV: inclusive corners
    np.testing.assert_array_equal(frame, expected)


def test_mask_runs_on_later_frames_match_the_decoded_masks():
    """Runs are flat column-major indices offset by t x W x H: rebuilt, they are the masks."""
    from magicmotion.trajectory import encode_mask
    from magicmotion.trajectory.render import box_runs, mask_runs

    h, w = 9, 7
    rng = np.random.default_rng(0)
    masks = {1: rng.random((h, w)) > 0.5, 3: rng.random((h, w)) > 0.7}
    starts, stops = mask_runs([encode_mask(m) for m in masks.values()], list(masks), w, h)
    flat = np.zeros(5 * w * h, bool)
    for a, b in zip(starts, stops):
        assert b > a  # no empty run
        flat[a:b] = True
    for t in range(5):
        expected = masks.get(t, np.zeros((h, w), bool))
        np.testing.assert_array_equal(flat[t * w * h:(t + 1) * w * h].reshape(w, h).T, expected)
    empty = mask_runs([], [], w, h)
    assert [(a.shape, a.dtype) for a in empty] == [((0,), np.int64), ((0,), np.int64)]
    starts, stops = box_runs([1, 2, 4, 6], 2, w, h)  # frame 2: columns 1..3, rows 2..5
    assert starts.tolist() == [2 * w * h + x * h + 2 for x in (1, 2, 3)] and (stops - starts).tolist() == [4] * 3


def test_painting_a_few_frames_at_a_time_gives_the_same_maps(monkeypatch):
    """Long videos are painted in chunks of frames: with chunks of two frames, the maps are the same
    as in one go, and frames of a chunk without any shape are black even over old content."""
    import importlib

    render_module = importlib.import_module("magicmotion.trajectory.render")  # the module, not the function
    traj = Trajectory(width=12, height=10, num_frames=7)
    for oid, x in ((1, 1), (2, 5)):
        o = ObjectTrack(id=oid)
        for t in range(7):
            o.set_mask(t, filled(10, 12, x + (t % 3), 2, x + 4 + (t % 3), 7) if t >= 2 else np.zeros((10, 12), bool))
        traj.objects.append(o)
    whole = render(traj, "mask")
    monkeypatch.setattr(render_module, "_CHUNK_PIXELS", 2 * 12 * 10)
    np.testing.assert_array_equal(render(traj, "mask"), whole)
    maps = np.full_like(whole, 255)
    shapes = [(*render_module.mask_runs([o.masks[t] for t in range(7)], list(range(7)), 12, 10), o.id)
              for o in traj.objects]
    render_module.paint_filled(maps, shapes)  # the default palette: ours
    np.testing.assert_array_equal(maps, whole)
    assert not maps[:2].any()


def test_render_messages_and_the_release_palette_for_masks():
    traj = Trajectory(width=10, height=10, num_frames=5, source="s.json")
    o = ObjectTrack(id=1)
    o.set_mask(0, filled(10, 10, 2, 2, 6, 6))
    o.set_mask(2, filled(10, 10, 2, 2, 6, 6))
    traj.objects.append(o)
    with pytest.raises(TrajectoryError, match=r"object 1 has none on frame 1 \(and 2 more\)$"):
        render(traj, "mask")
    o.set_mask(1, filled(10, 10, 2, 2, 6, 6))
    with pytest.raises(TrajectoryError, match=r"none on frame 3 \(and 1 more\)$"):
        render(traj, "mask")
    o.set_mask(3, filled(10, 10, 2, 2, 6, 6))
    with pytest.raises(TrajectoryError, match=r"none on frame 4$"):  # one missing: no "(and ...)"
        render(traj, "mask")
    with pytest.raises(TrajectoryError, match=r"expected one of mask, box, sparse_box$"):
        render(traj, "boxes")
    o.set_mask(4, filled(10, 10, 2, 2, 6, 6))
    assert tuple(render(traj, "mask", palette="release")[3, 3, 3]) == palette_color(1, "release") != palette_color(1)


def test_box_kind_leaves_a_frame_with_an_empty_mask_black():
    """An empty mask says the object is not there: no box drawn on that frame, none interpolated."""
    traj = Trajectory(width=20, height=20, num_frames=5)
    o = ObjectTrack(id=1, boxes={0: np.array([2, 2, 8, 8.0]), 4: np.array([10, 10, 16, 16.0])})
    o.set_mask(2, np.zeros((20, 20), bool))
    traj.objects.append(o)
    maps = render(traj, "box")
    assert not maps[2].any() and maps[1].any() and maps[3].any()


def test_preview_frames_at_a_size_that_is_not_square():
    traj = Trajectory(width=40, height=30, num_frames=2)
    traj.objects.append(ObjectTrack(id=1, boxes={0: np.array([2, 2, 10, 10.0]), 1: np.array([4, 4, 12, 12.0])}))
    frames, maps = preview_frames(traj, np.zeros((30, 40, 3), np.uint8), size=(24, 16))
    assert frames.shape == maps.shape == (2, 16, 24, 3)


def test_objects_drawn_alike_are_refused_naming_both_ids():
    """The release palette repeats its colours: ids 1 and 1 + (its number of colours) would be drawn
    alike and read back as one object. The message names both ids, the colour and the period."""
    from magicmotion.trajectory.palette import get_palette

    table = get_palette("release")
    period = len({tuple(c) for c in table[1:].tolist()})
    twin = next(i for i in range(2, 256) if tuple(table[i]) == tuple(table[1]))
    assert twin == 1 + period  # the release table cycles through its colours in order
    traj = Trajectory(64, 64, 5, [ObjectTrack(1, boxes={0: np.array([4.0, 4, 20, 20])}),
                                  ObjectTrack(twin, boxes={0: np.array([30.0, 30, 50, 50])})])
    with pytest.raises(TrajectoryError) as e:
        render(traj, "box", palette="release")
    colour = tuple(int(v) for v in table[1])
    assert str(e.value).endswith(f"objects 1 and {twin} have the same colour {colour} in the release palette; "
                                 f"give them ids that differ modulo {period}")
    render(traj, "box", palette="voc")  # 255 colours: the same ids are apart there


def test_map_video_reads_back_every_pixel_with_pyav(tmp_path):
    """write_maps_video: a lossless H.264 (RGB) file that PyAV decodes to the very maps, at an odd size,
    with the frame rate asked for; refusals name the file."""
    import av

    from magicmotion.errors import MediaError
    from magicmotion.trajectory.render import write_maps_video

    rng = np.random.default_rng(0)
    maps = (rng.integers(0, 4, (5, 33, 47, 1)) * np.array([[[[60, 90, 20]]]])).astype(np.uint8)
    path = write_maps_video(tmp_path / "m.mp4", maps, fps=12.5)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == 12.5 and (stream.width, stream.height) == (47, 33)
        back = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
    assert np.array_equal(back, maps)  # qp 0 in RGB: not one level off anywhere
    for fps in (0, -1, 1001):
        with pytest.raises(MediaError, match=f"{tmp_path / 'n.mp4'}: fps must be positive"):
            write_maps_video(tmp_path / "n.mp4", maps, fps=fps)
    assert not (tmp_path / "n.mp4").exists()
    write_maps_video(tmp_path / "fast.mp4", maps[:2], fps=1000)  # the upper bound itself is allowed
    with pytest.raises(MediaError, match=f"{tmp_path / 'bad.mp4'}: frames must be"):
        write_maps_video(tmp_path / "bad.mp4", maps[0])  # one frame without its time axis
    # an mp4 whatever the name says, at 8 fps unless told; slow rates below 1 fps are rates too
    for name, fps, rate in (("maps", None, 8), ("slow.mp4", 0.5, 0.5)):
        write_maps_video(tmp_path / name, maps, **({} if fps is None else {"fps": fps}))
        with av.open(str(tmp_path / name)) as c:
            assert c.format.name.startswith("mov,mp4") and c.streams.video[0].average_rate == rate
