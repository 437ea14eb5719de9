"""Boxes from their drawn outlines: an outline of `min(H, W) // 100` pixels, partly covered by other
objects, fitted to the rectangle that explains its visible segments (`fit_box`), and how well a box
explains an object's pixels as its outline (`outline_iou`). Used to read box maps back."""

from __future__ import annotations

import functools

import numpy as np

from .render import box_pixels, draw_box

OUTLINE_IOU = 0.6  # an object's pixels this close (IoU) to the outline of their box: an outline


@functools.lru_cache(maxsize=None)
def outline_band(thickness: int, style: str) -> tuple[int, int, int]:
    """How `draw_box` draws a box side of `style`: (outer, inner, shift). The left side of a box with
    left edge x0 covers columns x0 - outer .. x0 + inner; the right side of a box with right edge x1
    covers columns r - inner .. r + outer with r = x1 - shift (likewise top and bottom). Measured by
    drawing, so it is what this OpenCV does."""
    size = 8 * thickness + 40
    canvas = np.zeros((size, size, 3), np.uint8)
    x0, x1 = 2 * thickness + 4, size - 2 * thickness - 4
    draw_box(canvas, (x0, x0, x1, x1), (255, 255, 255), thickness, style=style)
    row = np.flatnonzero(canvas[size // 2, :, 0])
    left = row[row < size // 2]
    right = row[row >= size // 2]
    outer, inner = x0 - left[0], left[-1] - x0
    shift = x1 - (right[0] + inner)
    return int(outer), int(inner), int(shift)


def _side_line(mask: np.ndarray, cover: np.ndarray, lo: int, hi: int, outer: int, inner: int) -> int:
    """The line coordinate of the side of an outline that faces the end of axis 0 (the bottom side),
    in the coordinates of `mask` (bool (n, m), oriented so); columns lo..hi cross that side only.

    From the band's outer pixel in the columns where the pixel beyond it is neither past the frame nor
    covered by an object drawn later (`cover`); where the band is cut or covered, from its inner
    pixel (the first after the box's inside); where it is hidden entirely, just under the cover.
    Medians over the columns, so lossy maps read well."""
    n = mask.shape[0]
    span = outer + inner + 1
    extent = np.flatnonzero(mask.any(1))
    ext_first, ext_last = extent[0], extent[-1]
    sub = mask[:, lo:hi + 1]
    cols = np.flatnonzero(sub.any(0))
    sub, cov = sub[:, cols], cover[:, lo + cols]
    first = np.argmax(sub, axis=0)
    last = n - 1 - np.argmax(sub[::-1], axis=0)
    # a column shows this side where its lit pixels have a gap (the box's inside) between the two
    # sides, or where the box is too small for an inside; one run alone is the opposite side
    gap = sub.sum(axis=0) < last - first + 1
    own = gap | (ext_last - ext_first + 1 <= 2 * span)
    beyond = np.minimum(last + 1, n - 1)
    free = own & (last + 1 < n) & ~cov[beyond, np.arange(len(cols))]
    if free.any():
        return int(np.median(last[free])) - outer
    rows = np.arange(n)[:, None]
    if own.any():  # cut or covered past the outer pixel: from the inner pixel, if there is an inside
        unlit_before = np.maximum.accumulate(np.where(sub, -1, rows), axis=0)[last, np.arange(len(cols))]
        inside = own & (unlit_before > first)
        if inside.any():
            return int(np.median(unlit_before[inside])) + 1 + inner
        if last[own].max() == n - 1:  # no inside, cut by the frame's edge: the side lies on that edge
            return n - 1
        return int(last[own].max()) - outer
    # hidden all along: past the frame's edge, or where the other sides end, or under the cover
    if ext_last == n - 1:
        return n + inner
    if not cover[ext_last + 1, mask[ext_last]].any():
        return int(ext_last) - outer
    # the side's band begins under the cover where the other sides end (not under a cover that crosses
    # the box's inside: that one lies between this object's sides)
    starts = np.where(cov & (rows > ext_last), rows, n).min(axis=0)
    starts = starts[starts < n]
    return int(np.median(starts)) + inner if len(starts) else int(ext_last) - outer


def fit_box(mask: np.ndarray, thickness: int, style: str, cover: np.ndarray | None = None) -> np.ndarray:
    """The box whose outline (`draw_box` with `thickness` and `style`) is `mask` (bool (H, W), not
    empty), where `cover` (bool (H, W)) marks pixels that objects drawn later may hide: float
    [x0, y0, x1, y1] with integer values."""
    h, w = mask.shape
    cover = np.zeros_like(mask) if cover is None else cover
    outer, inner, shift = outline_band(thickness, style)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    span = outer + inner + 1  # skip the corners: the middle of each side crosses only that side

    def middle(a, b):
        if b - a > 2 * span:
            return a + span, b - span
        # a box too small to skip its corners: the lines between its edges, which the rounded corners
        # of `release` outlines do not shorten
        return (a + outer, b - outer) if b - a >= 2 * outer else (a, b)

    ca, cb = middle(left, right)
    ra, rb = middle(top, bottom)
    yb = _side_line(mask, cover, ca, cb, outer, inner)
    yt = h - 1 - _side_line(mask[::-1], cover[::-1], ca, cb, outer, inner)
    xr = _side_line(mask.T, cover.T, ra, rb, outer, inner)
    xl = w - 1 - _side_line(mask.T[::-1], cover.T[::-1], ra, rb, outer, inner)
    x0, y0, x1, y1 = xl, yt, xr + shift, yb + shift
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    return np.array([x0, y0, x1, y1], np.float64)


def _outline_fit(mask: np.ndarray, box: np.ndarray, thickness: int, style: str,
                 cover: np.ndarray | None) -> tuple[float, np.ndarray]:
    """IoU of `mask` (bool (H, W)) with the outline of `box` where `cover` does not hide it, and that
    ideal outline (bool, around the box)."""
    h, w = mask.shape
    cover = np.zeros_like(mask) if cover is None else cover
    x0, y0, x1, y1 = box_pixels(box, w, h)
    outer = outline_band(thickness, style)[0]
    ya, yb = max(y0 - outer - 1, 0), min(y1 + outer + 2, h)
    xa, xb = max(x0 - outer - 1, 0), min(x1 + outer + 2, w)
    ideal = np.zeros((h, w, 3), np.uint8)
    draw_box(ideal, box, (1, 1, 1), thickness, style=style)
    ideal = ideal[ya:yb, xa:xb, 0] > 0
    m = mask[ya:yb, xa:xb]
    shown = ideal & ~cover[ya:yb, xa:xb]
    # pixels of the object outside the window count against the fit too
    outside = int(mask.sum() - m.sum())
    union = (shown | m).sum() + outside
    return (float((shown & m).sum() / union) if union else 0.0), ideal


def outline_iou(mask: np.ndarray, box, thickness: int, style: str, cover: np.ndarray | None = None) -> float:
    """How well the outline of `box` (as `draw_box` draws it) explains `mask`, the object's pixels on
    a box map, where `cover` (objects drawn later) does not hide it: IoU in 0..1."""
    return _outline_fit(mask, np.asarray(box, np.float64), thickness, style, cover)[0]


def outline_state(mask: np.ndarray, box: np.ndarray, thickness: int, style: str,
                   cover: np.ndarray) -> str:
    """'outline' when `mask` is the outline of `box` (where objects drawn later, `cover`, do not hide
    it), 'solid' when that outline is itself a filled rectangle (a box too small to have an inside:
    either reading holds), else 'filled'."""
    iou, ideal = _outline_fit(mask, box, thickness, style, cover)
    if iou < OUTLINE_IOU:
        return "filled"
    rows, cols = np.flatnonzero(ideal.any(1)), np.flatnonzero(ideal.any(0))
    hole = ideal[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].mean() < 0.95
    return "outline" if hole else "solid"
