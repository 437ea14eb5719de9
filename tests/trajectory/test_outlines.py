"""Boxes read back from their drawn outlines (`trajectory/outlines.py`): the band OpenCV draws, the box
fitted to an outline (whole, cut by the frame's edge, partly hidden by a later object, with pixels
lost), how well a box explains an object's pixels, and the outline / solid / filled reading. Outlines
are drawn here with OpenCV directly: `cv2.rectangle` as the release draws them (`release`), four filled
rectangles a band `thickness` px wide inside the box (`voc`, docs/trajectory-format.md)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magicmotion.trajectory.outlines import OUTLINE_IOU, fit_box, outline_band, outline_iou, outline_state

SETTINGS = dict(max_examples=40, deadline=None)
STYLES = ("voc", "release")


def outline(h: int, w: int, box, thickness: int, style: str) -> np.ndarray:
    """bool (h, w): the outline of integer box [x0, y0, x1, y1) (inside the frame) drawn by OpenCV."""
    x0, y0, x1, y1 = (int(v) for v in box)
    canvas = np.zeros((h, w), np.uint8)
    if style == "release":
        cv2.rectangle(canvas, (x0, y0), (x1, y1), 1, thickness)
    else:
        t = thickness  # a box narrower than two bands is filled
        for a, b in (((x0, y0), (x1 - 1, min(y0 + t, y1) - 1)), ((x0, max(y1 - t, y0)), (x1 - 1, y1 - 1)),
                     ((x0, y0), (min(x0 + t, x1) - 1, y1 - 1)), ((max(x1 - t, x0), y0), (x1 - 1, y1 - 1))):
            cv2.rectangle(canvas, a, b, 1, -1)  # filled, corners inclusive
    return canvas > 0


@st.composite
def boxes(draw, min_side: int = 1):
    """(h, w, box, thickness, style): a box well inside a frame (its outline is not cut)."""
    style = draw(st.sampled_from(STYLES))
    t = draw(st.integers(1, 5))
    h, w = draw(st.integers(30, 90)), draw(st.integers(30, 90))
    m = t + 1  # the release band reaches (t + 1) // 2 + 1 px outside the box at most
    x0, y0 = draw(st.integers(m, w - m - min_side)), draw(st.integers(m, h - m - min_side))
    x1, y1 = draw(st.integers(x0 + min_side, w - m)), draw(st.integers(y0 + min_side, h - m))
    return h, w, [x0, y0, x1, y1], t, style


@pytest.mark.parametrize("thickness", range(1, 9))
def test_outline_band_is_what_opencv_draws(thickness):
    x0, x1 = 20, 70
    lit = np.flatnonzero(outline(100, 100, (x0, 20, x1, 70), thickness, "release")[45])
    outer, inner, shift = outline_band(thickness, "release")
    r = x1 - shift
    assert lit.tolist() == [*range(x0 - outer, x0 + inner + 1), *range(r - inner, r + outer + 1)]
    assert outline_band(thickness, "voc") == (0, thickness - 1, 1)  # inside the box: [x0, x0 + t), [x1 - t, x1)


@settings(**SETTINGS)
@given(case=boxes(min_side=1))
def test_fit_box_inverts_the_outline(case):
    """Any box, small ones too (an outline with no inside), is read back exactly from its outline."""
    h, w, box, t, style = case
    np.testing.assert_array_equal(fit_box(outline(h, w, box, t, style), t, style), box)


@pytest.mark.parametrize("style", STYLES)
def test_fit_box_outline_cut_by_the_frame(style):
    """A box reaching past the frame is drawn cut; the box read back is the frame's part of it, whose
    outline is the same pixels."""
    t, h, w = 3, 60, 80
    for box in ([-10, 5, 40, 30], [30, -8, 70, 40], [40, 20, 95, 50], [10, 30, 50, 75], [-5, -5, 60, 50]):
        canvas = np.zeros((h, w), np.uint8)
        if style == "release":
            cv2.rectangle(canvas, tuple(box[:2]), tuple(box[2:]), 1, t)
        else:  # the band inside the box: what lies in the frame
            big = outline(h + 40, w + 40, [v + 20 for v in box], t, "voc")
            canvas = big[20:20 + h, 20:20 + w].astype(np.uint8)
        mask = canvas > 0
        fitted = fit_box(mask, t, style)
        assert 0 <= fitted[0] < fitted[2] <= w and 0 <= fitted[1] < fitted[3] <= h
        inside = [max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)]
        for k in range(4):  # the sides inside the frame are exact
            if inside[k] == box[k]:
                assert fitted[k] == box[k], (box, fitted)
        if style == "voc":  # voc's band lies inside the box: the frame's part of it draws the same pixels
            np.testing.assert_array_equal(outline(h, w, fitted, t, "voc") | ~mask, ~mask | mask)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("hide", ["bottom", "top", "left", "right", "corner", "across"])
def test_fit_box_under_a_later_object(style, hide):
    """An object drawn later (filled: `cover`) hides part of the outline, a whole side, or crosses the
    box's inside: the box read back explains what is seen (its outline, less the cover, is the mask),
    and the sides seen are exact; a side hidden whole is put just under the cover's edge."""
    h, w, t = 80, 100, 3
    box = [20, 15, 70, 60]
    covers = {"bottom": (slice(52, 75), slice(0, 100)), "top": (slice(5, 22), slice(10, 90)),
              "left": (slice(0, 80), slice(10, 26)), "right": (slice(0, 80), slice(64, 80)),
              "corner": (slice(50, 80), slice(60, 100)), "across": (slice(30, 40), slice(0, 100))}
    cover = np.zeros((h, w), bool)
    cover[covers[hide]] = True
    mask = outline(h, w, box, t, style) & ~cover
    fitted = fit_box(mask, t, style, cover=cover)
    np.testing.assert_array_equal(outline(h, w, fitted, t, style) & ~cover, mask)
    hidden = {"bottom": 3, "top": 1, "left": 0, "right": 2}.get(hide)
    for k in range(4):
        if k != hidden:
            assert fitted[k] == box[k], (k, fitted)
    if hidden is not None:  # the nearest place the side can be, so the box is no bigger than seen
        edge = {0: 26, 1: 22, 2: 64, 3: 52}[hidden]  # the cover's edge facing the box's inside
        inner, shift = outline_band(t, style)[1:]
        expected = {0: edge - 1 - inner, 1: edge - 1 - inner, 2: edge + inner + shift, 3: edge + inner + shift}
        assert fitted[hidden] == expected[hidden], fitted


@pytest.mark.parametrize("style", STYLES)
def test_fit_box_side_hidden_at_the_frame_edge(style):
    """A side lost past the frame's bottom and right edges, nothing covering it: the box reaches past
    the frame there (clipped to it)."""
    h, w, t = 60, 80, 3
    box = [20, 10, w + 10, h + 10]  # right and bottom sides outside the frame
    mask = outline(h + 30, w + 30, box, t, style)[:h, :w]
    np.testing.assert_array_equal(fit_box(mask, t, style), [20, 10, w, h])


@pytest.mark.parametrize("style", STYLES)
def test_fit_box_reads_through_lost_pixels(style):
    """Pixels lost from the outline (a lossy video's damage: a few of each side's columns thinned): the
    medians over the columns still give the box."""
    h, w, t = 90, 120, 4
    box = [15, 12, 100, 75]
    mask = outline(h, w, box, t, style)
    rng = np.random.default_rng(0)
    for y in rng.choice(np.arange(box[1] + 8, box[3] - 8), 6, replace=False):
        mask[y, box[0] - t:box[0] + 1] = False  # the outer part of the left side on 6 rows
    for x in rng.choice(np.arange(box[0] + 8, box[2] - 8), 9, replace=False):
        mask[box[3] - 1:box[3] + t, x] = False  # the outer part of the bottom side on 9 columns
    np.testing.assert_array_equal(fit_box(mask, t, style), box)


def full_frame_iou(mask, box, thickness, style, cover):
    shown = outline(*mask.shape, box, thickness, style) & ~cover
    union = (shown | mask).sum()
    return (shown & mask).sum() / union if union else 0.0


@settings(**SETTINGS)
@given(case=boxes(min_side=1), seed=st.integers(0, 2**16), cover_frac=st.sampled_from([0.0, 0.1, 0.5]))
def test_outline_iou_is_the_iou_over_the_whole_frame(case, seed, cover_frac):
    """`outline_iou` (computed in a window around the box) equals the IoU over the whole frame of the
    object's pixels with the outline's pixels that the cover leaves shown; pixels far from the box
    count against it."""
    h, w, box, t, style = case
    rng = np.random.default_rng(seed)
    mask = outline(h, w, box, t, style) ^ (rng.random((h, w)) < 0.02)
    cover = rng.random((h, w)) < cover_frac
    assert outline_iou(mask, box, t, style, cover) == pytest.approx(full_frame_iou(mask, box, t, style, cover),
                                                                     abs=1e-12)  # float rounding only
    assert outline_iou(outline(h, w, box, t, style), box, t, style) == 1.0


def test_outline_iou_counts_far_pixels_and_hidden_outlines():
    h, w, t = 60, 80, 2
    box = [10, 10, 30, 30]
    mask = outline(h, w, box, t, "voc")
    n = int(mask.sum())
    far = mask.copy()
    far[55, 75] = True  # an object pixel far outside the box's window
    assert outline_iou(far, box, t, "voc") == pytest.approx(n / (n + 1), abs=1e-15)
    every = np.ones((h, w), bool)
    assert outline_iou(np.zeros((h, w), bool), box, t, "voc", cover=every) == 0.0  # nothing to compare


@pytest.mark.parametrize("style", STYLES)
def test_outline_state(style):
    h, w, t = 60, 80, 3
    box = [10, 10, 50, 40]
    ring = outline(h, w, box, t, style)
    no_cover = np.zeros((h, w), bool)
    assert outline_state(ring, np.array(box, float), t, style, no_cover) == "outline"
    filled = np.zeros((h, w), bool)
    filled[10:40, 10:50] = True
    assert outline_state(filled, np.array(box, float), t, style, no_cover) == "filled"
    tiny = [20, 20, 23, 23]  # too small for an inside: voc draws a filled square; OpenCV's rounded corners
    expected = "solid" if style == "voc" else "outline"  # leave a fifth of the release's square unlit
    assert outline_state(outline(h, w, tiny, t, style), np.array(tiny, float), t, style, no_cover) == expected


def test_outline_state_at_the_iou_threshold():
    """Exactly OUTLINE_IOU (0.6) of the outline shown is still an outline; one pixel fewer is not."""
    h, w, t = 60, 80, 1
    box = [10, 10, 41, 31]  # voc, thickness 1: 2 * 31 + 2 * 19 = 100 outline pixels
    ring = outline(h, w, box, t, "voc")
    assert ring.sum() == 100
    ys, xs = np.nonzero(ring)
    mask = ring.copy()
    mask[ys[60:], xs[60:]] = False  # 60 of the 100: IoU 60 / 100
    no_cover = np.zeros((h, w), bool)
    assert outline_iou(mask, box, t, "voc") == OUTLINE_IOU == 0.6
    assert outline_state(mask, np.array(box, float), t, "voc", no_cover) == "outline"
    mask[ys[59], xs[59]] = False
    assert outline_state(mask, np.array(box, float), t, "voc", no_cover) == "filled"


def test_outline_state_of_a_hidden_outline():
    """An outline half hidden by a later object is still an outline: only the part the cover leaves
    shown is compared (without the cover the IoU would be about a half)."""
    h, w, t = 60, 80, 3
    box = [10, 10, 50, 40]
    cover = np.zeros((h, w), bool)
    cover[:, 30:] = True
    mask = outline(h, w, box, t, "voc") & ~cover
    assert outline_iou(mask, box, t, "voc") < OUTLINE_IOU
    assert outline_state(mask, np.array(box, float), t, "voc", cover) == "outline"


@pytest.mark.parametrize("size, t, expected", [((7, 9), 3, "solid"), ((9, 7), 3, "solid"), ((7, 10), 3, "outline"),
                                               ((3, 10), 3, "solid"), ((10, 3), 3, "solid"), ((15, 16), 6, "solid")])
def test_outline_state_solid_means_at_least_95_percent_lit(size, t, expected):
    """'solid': the outline covers at least 95% of its box (too small an inside to tell an outline from
    a filled box). voc, 3 px: 7x9 has a 1x3 inside (60 of 63 pixels lit: 95.2%), 7x10 a 1x4 one
    (94.3%); 3 px wide boxes are lit whole; 6 px, 15x16: a 3x4 inside, 228 of 240 lit, exactly 95%."""
    h, w = 40, 50
    bw, bh = size
    box = [10, 12, 10 + bw, 12 + bh]
    ring = outline(h, w, box, t, "voc")
    assert (ring.sum() / (bw * bh) >= 0.95) == (expected == "solid")
    assert outline_state(ring, np.array(box, float), t, "voc", np.zeros((h, w), bool)) == expected


@st.composite
def boxes_anywhere(draw):
    """(h, w, box, thickness, style): a box inside the frame, touching its edges or not (its outline
    then cut by the frame: release's band reaches past the box), with an inside."""
    style = draw(st.sampled_from(STYLES))
    t = draw(st.integers(1, 5))
    h, w = draw(st.integers(30, 70)), draw(st.integers(30, 70))
    side = 2 * t + 3
    x0, y0 = draw(st.sampled_from([0, 1, 2, 5])), draw(st.sampled_from([0, 1, 2, 5]))
    x1 = draw(st.sampled_from([w, w - 1, w - 2, w - 5, x0 + side]))
    y1 = draw(st.sampled_from([h, h - 1, h - 2, h - 5, y0 + side]))
    return h, w, [x0, y0, x1, y1], t, style


@settings(**SETTINGS)
@given(case=boxes_anywhere())
def test_fit_box_at_the_frame_edges(case):
    """Boxes on or near the frame's edges (the outline's outer pixels cut off: read from the inner
    pixel) come back exactly, as floats; and the outline of such a box explains itself (IoU 1)."""
    h, w, box, t, style = case
    ring = outline(h, w, box, t, style)
    fitted = fit_box(ring, t, style)
    assert fitted.dtype == np.float64
    np.testing.assert_array_equal(fitted, box)
    assert outline_iou(ring, box, t, style) == 1.0


# (style, thickness, box): a big box, and boxes with an inside too small to skip their corners
OUTER_CASES = [("voc", 4, [15, 10, 70, 50]), ("release", 4, [15, 10, 70, 50]), ("voc", 2, [15, 10, 20, 15]),
               ("release", 2, [15, 10, 19, 14])]


@pytest.mark.parametrize("style, t, box", OUTER_CASES, ids=[f"{s}-{t}-{b[2] - b[0]}" for s, t, b in OUTER_CASES])
@pytest.mark.parametrize("side", ["left", "top", "right", "bottom"])
def test_fit_box_outer_pixels_under_a_later_object(style, t, box, side):
    """A later object hides the outermost pixel line of one side's band (the band's inner part still
    shows): that side is read from its inner pixel, exactly."""
    h, w = 70, 90
    x0, y0, x1, y1 = box
    outer, inner, shift = outline_band(t, style)
    cover = np.zeros((h, w), bool)
    hide = {"left": (slice(None), slice(0, x0 - outer + 1)), "top": (slice(0, y0 - outer + 1), slice(None)),
            "right": (slice(None), slice(x1 - shift + outer, None)),
            "bottom": (slice(y1 - shift + outer, None), slice(None))}
    cover[hide[side]] = True
    mask = outline(h, w, box, t, style) & ~cover
    np.testing.assert_array_equal(fit_box(mask, t, style, cover=cover), box)


@pytest.mark.parametrize("style", STYLES)
def test_fit_box_side_lost_without_a_cover(style):
    """A side missing with nothing covering it and the frame's edge far (a lossy video lost it): the
    box ends where the other sides end."""
    h, w, t = 70, 90, 3
    box = [15, 10, 70, 50]
    outer, inner, shift = outline_band(t, style)
    ring = outline(h, w, box, t, style)
    r = box[3] - shift
    ring[r - inner:, :] = False  # the bottom side's band and what lies past it
    fitted = fit_box(ring, t, style)
    last = int(np.flatnonzero(ring.any(1))[-1])
    np.testing.assert_array_equal(fitted, [box[0], box[1], box[2], last - outer + shift])


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("t", [1, 2, 4])
def test_fit_box_thin_boxes_on_the_frame_edges(style, t):
    """One-pixel-wide boxes along each edge of the frame (a pole at the border) come back exactly."""
    h, w = 40, 50
    for box in ([w - 1, 10, w, 30], [0, 10, 1, 30], [10, h - 1, 30, h], [10, 0, 30, 1], [w - 1, h - 1, w, h]):
        np.testing.assert_array_equal(fit_box(outline(h, w, box, t, style), t, style), box, err_msg=str(box))
