"""The drawing as the page shows it: the first frame with each object's box or mask, its path and
scales, and labels, enlarged to a size one can click on (no Gradio here)."""

from __future__ import annotations

import cv2
import numpy as np

from ..trajectory import palette_color
from .drawing import DrawnObject, check_image


def canvas_zoom(size: tuple[int, int], side: int = 512) -> int:
    """The whole-number factor a `size` = (W, H) frame is enlarged by on the drawing, so that a small
    frame gets a longer side of at least `side` pixels to click on."""
    return max(1, int(np.ceil(side / max(size))))


def draw_canvas(image: np.ndarray, objects: list[DrawnObject], current: int | None = None,
                zoom: int = 1, alpha: float = 0.45) -> np.ndarray:
    """The first frame, enlarged `zoom` times (nearest neighbour), with each object's mask tinted in
    its colour and outlined, its box, its SAM 2 points (green +: on the object, red x: background), a
    pending box corner, and its path: arrows from the mask's centre through the numbered points, with
    the scales set there. The current object's path is drawn thicker. Returns uint8 (zoom H, zoom W, 3);
    a canvas pixel (X, Y) is the frame point (X / zoom, Y / zoom)."""
    image = check_image(image)
    h, w = image.shape[:2]
    canvas = cv2.resize(image, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST) if zoom > 1 else image.copy()
    unit = max(1, round(min(canvas.shape[:2]) / 240))

    def at(p) -> tuple[int, int]:
        return int(round(float(p[0]) * zoom)), int(round(float(p[1]) * zoom))

    def line(a, b, color, thick, arrow=True):
        tip = min(0.3, 10 * unit / max(1.0, float(np.hypot(b[0] - a[0], b[1] - a[1]))))
        draw = cv2.arrowedLine if arrow else cv2.line
        kw = {"tipLength": tip} if arrow else {}
        draw(canvas, a, b, (255, 255, 255), thick + 2, cv2.LINE_AA, **kw)
        draw(canvas, a, b, color, thick, cv2.LINE_AA, **kw)

    for o in objects:
        color = palette_color(o.id)
        has_mask = o.mask is not None and o.mask.shape == (h, w) and bool(o.mask.any())
        if has_mask:
            mask = o.mask if zoom == 1 else cv2.resize(o.mask.astype(np.uint8), (w * zoom, h * zoom),
                                                       interpolation=cv2.INTER_NEAREST).astype(bool)
            tint = canvas[mask].astype(np.float32) * (1 - alpha) + np.array(color, np.float32) * alpha
            canvas[mask] = np.clip(tint + 0.5, 0, 255).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, color, unit)
        if o.box is not None:
            cv2.rectangle(canvas, at(o.box[:2]), at(o.box[2:]), color, unit)
        for p, lbl in zip(o.points, o.point_labels):
            cv2.drawMarker(canvas, at(p), (0, 200, 0) if lbl else (230, 0, 0),
                           cv2.MARKER_CROSS if lbl else cv2.MARKER_TILTED_CROSS, 8 * unit, 2 * unit)
        if o.corner is not None:
            cv2.drawMarker(canvas, at(o.corner), color, cv2.MARKER_SQUARE, 8 * unit, 2 * unit)
        if has_mask:
            pts = [at(p) for p in [o.start(), *o.path]]
            thick = 2 * unit if o.id == current else unit
            for a, b in zip(pts, pts[1:]):
                line(a, b, color, thick)
            cv2.circle(canvas, pts[0], 2 * unit + 1, color, -1)
            for i, p in enumerate(pts[1:], start=1):
                cv2.circle(canvas, p, 2 * unit + 1, color, -1)
                draw_label(canvas, point_label(i, o.scales), p, color, unit)
    return canvas


def scale_text(scale: float) -> str:
    """A path point's scale as shown to the user: "x1.5", "x0.92" (two decimals at most)."""
    return f"x{round(float(scale), 2):g}"


def point_label(i: int, scales: dict[int, float]) -> str:
    """The label of path point i on the drawing: its number, and its scale when one is set there."""
    return str(i) + (f" {scale_text(scales[i])}" if i in scales else "")


LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_box(text: str, point, size: tuple[int, int], unit: int = 1) -> tuple[int, int, int, int]:
    """Where `draw_label` puts `text` for a point (x, y) of a `size` = (W, H) canvas: up and to the
    right of the point, flipped to the other side of it at an edge and then shifted so the whole label
    (with its white outline) lies inside the canvas. Returns the label's box (x0, y0, x1, y1), pixels
    x0 <= X < x1, y0 <= Y < y1."""
    (tw, th), base = cv2.getTextSize(text, LABEL_FONT, 0.45 * unit, 3 * unit)
    pad = 2 * unit  # the outline and the anti-aliasing reach this far beyond the glyphs
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    w, h = size
    px, py = int(point[0]), int(point[1])
    x0 = px + 4 * unit - pad
    if x0 + bw > w:
        x0 = px - 4 * unit - bw + pad
    y0 = py - 4 * unit - th - pad
    if y0 < 0:
        y0 = py + 4 * unit - pad
    x0 = min(max(x0, 0), max(w - bw, 0))
    y0 = min(max(y0, 0), max(h - bh, 0))
    return x0, y0, x0 + bw, y0 + bh


def draw_label(canvas: np.ndarray, text: str, point, color, unit: int = 1) -> tuple[int, int, int, int]:
    """`text` in `color` with a white outline next to canvas pixel `point`, kept inside the canvas
    (see `label_box`); returns its box."""
    h, w = canvas.shape[:2]
    box = label_box(text, point, (w, h), unit)
    _, base = cv2.getTextSize(text, LABEL_FONT, 0.45 * unit, 3 * unit)
    org = (box[0] + 2 * unit, box[3] - 2 * unit - base)  # putText's origin: the text's baseline, left
    cv2.putText(canvas, text, org, LABEL_FONT, 0.45 * unit, (255, 255, 255), 3 * unit, cv2.LINE_AA)
    cv2.putText(canvas, text, org, LABEL_FONT, 0.45 * unit, color, unit, cv2.LINE_AA)
    return box


__all__ = ["canvas_zoom", "draw_canvas", "draw_label", "label_box", "point_label", "scale_text"]
