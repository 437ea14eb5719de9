"""The classic tracker: objects followed through a video from their frame-0 masks without any weights.

Per object, a colour model (hue-saturation-value histogram of the object against its surroundings on
frame 0) is back-projected on each frame, the object's window is followed by mean shift and its mask
is the confident pixels around the window; where the colour model does not even separate the object
on frame 0, the frame-0 mask is instead moved by template matching. Much weaker than SAM 2 on real
video (similar colours, lighting, deformation); meant for the synthetic world and tests, where
objects are saturated and backgrounds muted.
"""

from __future__ import annotations

import numpy as np

from ..trajectory.spec import mask_box


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; 1.0 when both are empty (as the benchmark's mask_iou)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


class ClassicTracker:
    """Colour-histogram back-projection + mean-shift tracking seeded by the frame-0 mask (OpenCV).

    bins: histogram bins of hue, saturation and value (HSV, OpenCV ranges); context: the surroundings
    that the colour model is learnt against, in box sizes around the object; threshold: the object
    probability above which a pixel belongs to the object; margin: how far around the tracked window
    the mask may reach, as a share of the window size; min_reliability: the frame-0 IoU of the colour
    model's own mask below which the object is tracked by template matching instead; fill: fill holes
    in the masks."""

    name = "classic"

    def __init__(self, bins: tuple[int, int, int] = (30, 16, 8), context: float = 2.0,
                 threshold: float = 0.5, margin: float = 0.35, min_reliability: float = 0.5,
                 fill: bool = True):
        self.fill = bool(fill)
        self.bins = tuple(int(b) for b in bins)
        self.context, self.threshold = float(context), float(threshold)
        self.margin, self.min_reliability = float(margin), float(min_reliability)

    def track(self, frames: np.ndarray, first_masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """frames uint8 (T, H, W, 3), first_masks {id: bool (H, W)} -> {id: bool (T, H, W)}."""
        frames = np.asarray(frames)
        masks = {int(k): np.asarray(v, dtype=bool) for k, v in first_masks.items()}
        T, H, W = frames.shape[:3]
        codes = colour_codes(frames, self.bins)
        out = {oid: np.zeros((T, H, W), dtype=bool) for oid in masks}
        trackers = {}
        for oid, m in masks.items():
            out[oid][0] = m
            if m.any():
                trackers[oid] = _ObjectTracker(self, frames, codes, m)
        for t in range(1, T):
            probs = {}
            for oid, tr in trackers.items():
                out[oid][t], probs[oid] = tr.step(t)
            _resolve_overlaps({oid: out[oid][t] for oid in trackers}, probs)
            for oid, tr in trackers.items():
                tr.commit(out[oid][t])
        return out


def colour_codes(frames: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
    """The HSV histogram bin of every pixel: int64 (T, H, W) (OpenCV HSV: hue 0..179, s and v 0..255)."""
    import cv2

    hsv = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV) for f in frames]).astype(np.int64)
    top = (180, 256, 256)
    idx = [np.minimum(hsv[..., c] * bins[c] // top[c], bins[c] - 1) for c in range(3)]
    return np.ravel_multi_index(idx, bins)


def _smooth(hist: np.ndarray) -> np.ndarray:
    """Spread each bin's count a little to its neighbours ([1, 2, 1] / 4 along every axis; hue wraps)."""
    out = hist.astype(np.float64)
    for axis in range(out.ndim):
        if out.shape[axis] < 3:
            continue
        if axis == 0:  # hue is circular
            prev, nxt = np.roll(out, 1, axis), np.roll(out, -1, axis)
        else:
            pad = [(0, 0)] * out.ndim
            pad[axis] = (1, 1)
            padded = np.pad(out, pad, mode="edge")
            prev = np.take(padded, range(0, out.shape[axis]), axis=axis)
            nxt = np.take(padded, range(2, out.shape[axis] + 2), axis=axis)
        out = (prev + 2 * out + nxt) / 4
    return out


def _resolve_overlaps(masks: dict[int, np.ndarray], probs: dict[int, np.ndarray]) -> None:
    """A pixel claimed by several objects goes to the one with the highest probability there."""
    ids = list(masks)
    if len(ids) < 2:
        return
    claimed = np.stack([masks[i] for i in ids])
    multi = claimed.sum(axis=0) > 1
    if not multi.any():
        return
    p = np.stack([np.where(masks[i], probs[i], -1.0) for i in ids])
    best = p.argmax(axis=0)
    for k, i in enumerate(ids):
        masks[i][multi & (best != k)] = False


def _clip_window(x0, y0, x1, y1, w, h):
    x0, y0 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.floor(y0), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(x1), x0 + 1, w)), int(np.clip(np.ceil(y1), y0 + 1, h))
    return x0, y0, x1, y1


class _ObjectTracker:
    """State of one object in `ClassicTracker.track`."""

    def __init__(self, cfg: ClassicTracker, frames, codes, mask0):
        import cv2

        self.cfg, self.frames, self.codes = cfg, frames, codes
        self.H, self.W = mask0.shape
        self.box = mask_box(mask0)
        self.velocity = np.zeros(2)
        self.area0 = self.area = float(mask0.sum())
        self.lost = 0
        bw, bh = self.box[2] - self.box[0], self.box[3] - self.box[1]
        c = cfg.context
        x0, y0, x1, y1 = _clip_window(self.box[0] - c * bw, self.box[1] - c * bh, self.box[2] + c * bw,
                                      self.box[3] + c * bh, self.W, self.H)
        around = np.zeros_like(mask0)
        around[y0:y1, x0:x1] = True
        around &= ~mask0
        if around.sum() < mask0.sum():  # object fills its surroundings: learn against the whole frame
            around = ~mask0
        self.hist = self._posterior(codes[0], mask0, around)
        prob0 = self.probability(0)
        self.reliability = _iou(prob0 > cfg.threshold, mask0) if around.any() else 1.0
        self.use_colour = self.reliability >= cfg.min_reliability
        if not self.use_colour:  # template of the object on frame 0 (grey), and its mask
            gx0, gy0, gx1, gy1 = (int(v) for v in self.box)
            grey = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
            self.template = grey[gy0:gy1, gx0:gx1]
            self.template_mask = mask0[gy0:gy1, gx0:gx1]

    def _posterior(self, code0, obj, around) -> np.ndarray:
        """P(object | colour bin) from frame 0: object counts / (object + surrounding counts), both
        smoothed over neighbouring bins: float (bins,)."""
        n = int(np.prod(self.cfg.bins))
        h_obj = _smooth(np.bincount(code0[obj], minlength=n).reshape(self.cfg.bins))
        h_bg = _smooth(np.bincount(code0[around], minlength=n).reshape(self.cfg.bins))
        return (h_obj / (h_obj + h_bg + 1e-3)).ravel().astype(np.float32)

    def probability(self, t: int) -> np.ndarray:
        """Back-projection: each pixel's object probability from its colour bin, float (H, W)."""
        return self.hist[self.codes[t]]

    def step(self, t: int):
        """The mask on frame t (before overlaps between objects are settled) and the probabilities."""
        if self.use_colour:
            return self._step_colour(t)
        return self._step_template(t)

    def _predicted(self):
        grow = 1.0 + 0.5 * min(self.lost, 4)
        x0, y0, x1, y1 = self.box
        cx, cy = (x0 + x1) / 2 + self.velocity[0], (y0 + y1) / 2 + self.velocity[1]
        hw, hh = (x1 - x0) / 2 * grow, (y1 - y0) / 2 * grow
        return cx - hw, cy - hh, cx + hw, cy + hh

    def _step_colour(self, t):
        import cv2

        prob = self.probability(t)
        x0, y0, x1, y1 = _clip_window(*self._predicted(), self.W, self.H)
        prob8 = np.clip(prob * 255, 0, 255).astype(np.uint8)
        prob8[prob < self.cfg.threshold] = 0
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.5)
        _, (wx, wy, ww, wh) = cv2.meanShift(prob8, (x0, y0, x1 - x0, y1 - y0), criteria)
        m = self.cfg.margin
        rx0, ry0, rx1, ry1 = _clip_window(wx - m * ww - 1, wy - m * wh - 1, wx + ww + m * ww + 1,
                                          wy + wh + m * wh + 1, self.W, self.H)
        cand = np.zeros((self.H, self.W), dtype=bool)
        cand[ry0:ry1, rx0:rx1] = prob[ry0:ry1, rx0:rx1] > self.cfg.threshold
        cand = _drop_specks(cand, max(2.0, 0.03 * self.area))
        if self.cfg.fill:
            cand = _fill_holes(cand)
        if cand.sum() < max(1.0, 0.05 * self.area0):
            cand[:] = False
        return cand, prob

    def _step_template(self, t):
        import cv2

        grey = cv2.cvtColor(self.frames[t], cv2.COLOR_RGB2GRAY)
        th, tw = self.template.shape
        px0, py0, px1, py1 = self._predicted()
        pad_x, pad_y = max(tw, 8), max(th, 8)
        x0, y0, x1, y1 = _clip_window(px0 - pad_x, py0 - pad_y, px1 + pad_x, py1 + pad_y, self.W, self.H)
        region = grey[y0:y1, x0:x1]
        mask = np.zeros((self.H, self.W), dtype=bool)
        if region.shape[0] < th or region.shape[1] < tw:
            return mask, mask.astype(np.float32)
        score = cv2.matchTemplate(region, self.template, cv2.TM_CCOEFF_NORMED,
                                  mask=self.template_mask.astype(np.uint8) * 255)
        score = np.nan_to_num(score, nan=-1.0, posinf=-1.0, neginf=-1.0)
        _, best, _, (bx, by) = cv2.minMaxLoc(score)
        if best < 0.3:
            return mask, mask.astype(np.float32)
        mask[y0 + by:y0 + by + th, x0 + bx:x0 + bx + tw] = self.template_mask
        return mask, mask.astype(np.float32) * float(best)

    def commit(self, mask: np.ndarray) -> None:
        """Update position, velocity and size from the final mask of this frame."""
        box = mask_box(mask)
        if box is None:
            self.lost += 1
            self.velocity *= 0.5
            return
        old = self.box
        shift = np.array([(box[0] + box[2] - old[0] - old[2]) / 2, (box[1] + box[3] - old[1] - old[3]) / 2])
        self.velocity = shift if self.lost == 0 else shift / (self.lost + 1)
        self.box, self.area, self.lost = box, float(mask.sum()), 0


def _drop_specks(mask: np.ndarray, min_area: float) -> np.ndarray:
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region not connected to the frame border filled."""
    import cv2

    if not mask.any():
        return mask
    padded = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    n, labels = cv2.connectedComponents(padded, connectivity=4)
    outside = labels[0, 0]
    return mask | (labels[1:-1, 1:-1] != outside) & ~mask


__all__ = ["ClassicTracker", "colour_codes"]
