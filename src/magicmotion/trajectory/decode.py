"""Trajectory maps -> spec: read rendered maps (also after lossy H.264) back into a Trajectory.

`from_maps(maps, kind=None, palette=None)` inverts `render`:

1. palette: the one whose colours lie nearest the map's non-black pixels (unless given);
2. colours: each pixel is black (background) or one of the palette's object colours. Lossless maps
   (PNG frames, `render`'s mp4) are read exactly: every colour on `MIN_PIXELS` pixels is an object.
   In lossy maps, pixels within `CORE_TOL` of a colour are that colour's *core*; an object colour is
   present when its core survives a 3x3 erosion somewhere (so the one-pixel fringes H.264 leaves
   along edges, whose blended colours can be other palette colours, make no objects), a colour on
   the blend of two others must show it by size, shape or colour statistics, and a colour drift of
   a close stronger colour is none. The remaining non-black pixels (fringes) go to the nearest core
   pixel's object when their colour is nearer that object's colour than black; pixels between two
   close colours take their clear neighbours' label;
3. ids: a colour reads back as the smallest id drawn in it (`palette_ids`);
4. per object and frame: filled (a mask: stored) or an outline (a box: recovered by inverting how
   the palette's style draws it, `draw_box`, so that re-rendering draws the same outline);
5. kind (unless given): `mask` when frames 1.. show filled shapes, `box` when they show outlines
   and none is empty, `sparse_box` when some frame after 0 is entirely black (a few shapes read the
   other way, up to 10%, are outvoted);
6. envelope (lossy maps only, `_check_envelope`): box maps with outlines under 3 px are refused,
   small masks and close colours warned (docs/trajectory-format.md, "What map videos keep").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import TrajectoryError
from .palette import PALETTES, palette_ids
from .render import KINDS, box_thickness
from .outlines import fit_box, outline_state
from .spec import ObjectTrack, Trajectory, encode_mask, mask_box

DARK = 20            # pixels whose channels are all below this are background
CORE_TOL = 20        # RGB distance within which a pixel is taken to be a palette colour
UNKNOWN_TOL = 40     # farther than this from every palette colour: not a map colour
LOSSY_MIN_THICKNESS = 3   # outlines thinner than this are lost to lossy video (measured, docs)
OUTLINE_AREA_SHARE = 0.35  # an outline of a box covers under this share of the box (its mask: more)
LOSSY_MASK_MIN_SIDE = 256  # masks in lossy video below this size: object IoU < 0.9 measured (docs)
LOSSY_CLOSE_COLOURS = 22   # colours this close (release 16/21: 18.7, 2/19: 21.4) drift into one another
CLOSE_GAP = 25            # colours this close (release 16/21 18.7, 2/19 21.4, 18/21 22.9) are voted on
AMBIGUOUS_SHARE = 0.3     # ... a pixel nearer one than the other by this share of their gap is sure
DRIFT_TOL = 8             # an object's pixels in a lossy video: median 2-3 from its colour (crf 30)
DRIFT_PURITY = 0.4        # ... a drift patch's: median 14, under 40% within DRIFT_TOL (measured)
BLEND_PURITY = 0.6        # a colour on a blend of two others is an object when this share of its
                          # pixels is at its colour (a small drawn one: 0.79 at crf 18; an even blend
                          # of colours 40+ apart puts at most 0.4 of its near pixels within DRIFT_TOL)
PURITY_MIN_PIXELS = 16    # purity is measured on frames with at least this many pixels near the colour
MIN_PIXELS = 4       # an object colour shows on at least this many pixels of some frame


def load_maps(path: str | os.PathLike) -> np.ndarray:
    """Trajectory maps from a video file (mp4, ...) or a folder of PNG/JPG frames (sorted by name):
    uint8 (T, H, W, 3) RGB."""
    from ..io import read_video

    maps, _ = read_video(Path(path))
    return maps


# ------------------------------------------------------------------------------------- colours


def _distinct(palette: str) -> tuple[np.ndarray, np.ndarray]:
    """The palette's distinct object colours, int32 (K, 3), and the id each reads back as (K,)."""
    ids = palette_ids(palette)
    return np.array(list(ids), np.int32).reshape(-1, 3), np.array(list(ids.values()), np.int64)


def _nearest(pixels: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For uint8 (N, 3) pixels: index of the nearest of `colours` (K, 3) and the squared distance.
    Works on the distinct pixel values, so lossless maps cost next to nothing."""
    if len(pixels) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = (pixels[:, 0].astype(np.int32) << 16) | (pixels[:, 1].astype(np.int32) << 8) | pixels[:, 2]
    values, inverse = np.unique(key, return_inverse=True)
    rgb = np.stack([values >> 16, (values >> 8) & 255, values & 255], axis=1).astype(np.int64)
    d2 = ((rgb[:, None, :] - colours[None].astype(np.int64)) ** 2).sum(-1)
    best = d2.argmin(1)
    return best[inverse], d2[np.arange(len(values)), best][inverse]


def _bright(frame: np.ndarray) -> np.ndarray:
    """bool (H, W): not background-dark."""
    return np.maximum(np.maximum(frame[..., 0], frame[..., 1]), frame[..., 2]) >= DARK  # faster than max(axis=2)


def detect_palette(maps: np.ndarray, source: str = "maps") -> str:
    """The palette whose colours lie nearest (median distance) to the maps' non-black pixels."""
    step = max(1, len(maps) // 12)
    pixels = maps[::step][_bright_video(maps[::step])]
    if len(pixels) == 0:
        raise TrajectoryError(f"{source}: no objects found (every frame is black)")
    if len(pixels) > 400_000:
        pixels = pixels[:: len(pixels) // 400_000 + 1]
    scores = {name: float(np.median(_nearest(pixels, _distinct(name)[0])[1])) for name in PALETTES}
    return min(PALETTES, key=lambda name: scores[name])


def _bright_video(maps: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(maps[..., 0], maps[..., 1]), maps[..., 2]) >= DARK


def _check_unknown(frame: np.ndarray, bright: np.ndarray, d2: np.ndarray, where: str, t: int) -> None:
    """Raise when colours that are no palette colour make up most of a frame's non-black pixels."""
    far = d2 > UNKNOWN_TOL ** 2
    if far.sum() > 0.5 * max(int(bright.sum()), 1) and far.sum() >= 16:
        pixels = frame[bright][far]
        values, counts = np.unique(pixels // 8 * 8 + 4, axis=0, return_counts=True)
        colour = tuple(int(v) for v in values[counts.argmax()])
        raise TrajectoryError(
            f"{where}: frame {t}: {100 * far.sum() / bright.sum():.0f}% of the non-black pixels are "
            f"no colour of the palette (mostly about {colour}); not trajectory maps of this palette"
        )


def _present_colours(maps: np.ndarray, colours: np.ndarray, erode: bool, where: str) -> np.ndarray:
    """Indices (into `colours`) of the object colours the maps show, strongest first.

    Lossless maps (every non-black pixel of every frame exactly a palette colour, as supervision and
    OpenCV draw into a PNG) hold no blends: every colour with `MIN_PIXELS` pixels on some frame is an
    object, however small and whatever colours it lies between. Lossy maps (a video) leave blends
    along edges (of black and a colour, or of two colours) that can be other palette colours, such as
    voc (0, 0, 64) between (0, 0, 128) and black; a colour is an object where its core (`CORE_TOL`)
    covers a 3x3 square (`erode`) on some frame, and a colour that lies on the blend of two stronger
    ones must show it by size (a tenth of the stronger one's pixels), by shape over the frames (a
    5x5 interior, where an edge fringe is 1-3 px wide, on at least half the frames where its core
    shows) or by colour statistics (most of its pixels at its colour, where a blend spreads them
    between its two ends). A colour close to a stronger one whose pixels mostly lie between the two
    is a colour drift of that one (low quality video), not an object."""
    strength = np.zeros(len(colours), np.int64)  # the most core pixels on any frame
    first = np.zeros(len(colours), np.int64)     # core pixels on frame 0
    exact = np.zeros(len(colours), np.int64)     # the most exact pixels on any frame
    solid = np.zeros(len(colours), np.int64)     # frames where the core has a 5x5 interior
    cored = np.zeros(len(colours), np.int64)     # frames where the (eroded) core shows
    purity = np.zeros(len(colours))              # the largest share, on a frame, of true-colour core pixels
    lossless = True
    k3, k5 = np.ones((3, 3), np.uint8), np.ones((5, 5), np.uint8)
    for t, frame in enumerate(maps):
        bright = _bright(frame)
        if not bright.any():
            continue
        index, d2 = _nearest(frame[bright], colours)
        _check_unknown(frame, bright, d2, where, t)
        lossless = lossless and bool((d2 == 0).all())
        exact = np.maximum(exact, np.bincount(index[d2 == 0], minlength=len(colours)))
        core = np.zeros(frame.shape[:2], np.uint16)
        core[bright] = np.where(d2 <= CORE_TOL ** 2, index + 1, 0)
        near = np.bincount(index[d2 <= CORE_TOL ** 2], minlength=len(colours))
        true = np.bincount(index[d2 <= DRIFT_TOL ** 2], minlength=len(colours))
        purity = np.maximum(purity, np.where(near >= PURITY_MIN_PIXELS, true / np.maximum(near, 1), 0))
        if erode:  # keep core pixels whose 3x3 neighbourhood is all the same colour
            same = (cv2.erode(core, k3) == core) & (cv2.dilate(core, k3) == core)
            inner = (cv2.erode(core, k5) == core) & (cv2.dilate(core, k5) == core) & (core > 0)
            solid += np.bincount(core[inner].ravel(), minlength=len(colours) + 1)[1:] > 0
            core = np.where(same, core, 0)
        counts = np.bincount(core.ravel(), minlength=len(colours) + 1)[1:]
        strength = np.maximum(strength, counts)
        cored += counts > 0
        if t == 0:
            first = counts
    if lossless:
        order = np.argsort(-exact, kind="stable")
        return np.array([int(c) for c in order if exact[c] >= MIN_PIXELS], np.int64)
    accepted: list[int] = []
    for c in np.argsort(-strength, kind="stable"):
        if strength[c] < MIN_PIXELS:
            break
        anchors = [np.zeros(3)] + [colours[a].astype(float) for a in accepted]
        weights = [0] + [strength[a] for a in accepted]
        blend = any(
            _segment_distance(colours[c], anchors[i], anchors[j]) <= CORE_TOL
            and strength[c] < 0.1 * max(weights[i], weights[j])
            and not (erode and solid[c] >= max(1, (cored[c] + 1) // 2))
            and purity[c] < BLEND_PURITY
            for i in range(len(anchors)) for j in range(i + 1, len(anchors))
        )
        # a colour drift: a lossy video shifts part of an object towards a close colour (release 2 ->
        # 19 at crf 30); those pixels lie between the two, a drawn object's at its colour
        drift = any(np.linalg.norm(colours[c] - colours[a]) <= CLOSE_GAP and purity[c] < DRIFT_PURITY
                    and strength[c] < strength[a] for a in accepted)
        if not blend and not drift:
            _refuse_dimmed_outline(c, accepted, colours, first, where)
            accepted.append(int(c))
    return np.array(accepted, np.int64)


def _refuse_dimmed_outline(c: int, accepted: list[int], colours: np.ndarray, first: np.ndarray, where: str) -> None:
    """TrajectoryError when colour `c` is a darker copy of an accepted colour (on the segment from black
    to it) with no core on frame 0 while that colour has one: thin outlines coded with subsampled
    chroma (MJPEG) come out at a fraction of their colour on the frames after 0, where frame 0 (filled
    in every map kind) keeps it. Read as it is, it would be a phantom object; the outlines' object
    cannot be told from it."""
    if first[c] > 0:
        return
    for a in accepted:
        if first[a] > 0 and _segment_distance(colours[c], np.zeros(3), colours[a]) <= CORE_TOL:
            raise TrajectoryError(
                f"{where}: colour {tuple(int(v) for v in colours[c])} appears only after frame 0 and is a dimmed "
                f"copy of {tuple(int(v) for v in colours[a])}: outlines too thin for this video's colour "
                "coding (MJPEG?) to keep their colour; write the maps as H.264 mp4 or PNG frames")


def _segment_distance(point, a, b) -> float:
    """RGB distance from `point` to the segment a-b."""
    point, a, b = (np.asarray(v, float) for v in (point, a, b))
    ab = b - a
    u = 0.0 if not ab.any() else float(np.clip((point - a) @ ab / (ab @ ab), 0, 1))
    return float(np.linalg.norm(point - (a + u * ab)))


def _label_frame(frame: np.ndarray, present: np.ndarray) -> np.ndarray:
    """uint8 (H, W) labels: 0 background, k for present colour k - 1 (`present` int (K, 3))."""
    h, w = frame.shape[:2]
    labels = np.zeros((h, w), np.uint8)
    bright = _bright(frame)
    if not bright.any() or len(present) == 0:
        return labels
    candidates = np.concatenate([np.zeros((1, 3), present.dtype), present])  # 0: black
    index, d2 = _nearest(frame[bright], candidates)
    core = d2 <= CORE_TOL ** 2
    labels[bright] = np.where(core, index, 0)
    _vote_close_colours(frame, labels, present)
    fringe = np.zeros((h, w), bool)
    fringe[bright] = ~core
    seeds = labels > 0
    if fringe.any() and seeds.any():
        # a fringe pixel belongs to the nearest object core if its colour is nearer that than black
        _, nearest = cv2.distanceTransformWithLabels((~seeds).astype(np.uint8), cv2.DIST_L2, 3,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        owner = labels[seeds][nearest[fringe] - 1]
        pixels = frame[fringe].astype(np.int64)
        to_owner = ((pixels - present[owner - 1].astype(np.int64)) ** 2).sum(1)
        to_black = (pixels ** 2).sum(1)
        labels[fringe] = np.where(to_owner < to_black, owner, 0)
    return labels


def _vote_close_colours(frame: np.ndarray, labels: np.ndarray, present: np.ndarray) -> None:
    """In place: core pixels whose colour lies between two present colours that are close (release
    16 and 21 are 18.7 apart, so compression noise moves pixels across the midpoint) take the label
    most of their clear neighbours (7x7) have among the two: objects are told apart by shape, not by
    each pixel's colour alone. Exact colours (lossless maps) are never ambiguous."""
    colours = present.astype(np.float64)
    for a in range(len(present)):
        for b in range(a + 1, len(present)):
            gap = float(np.linalg.norm(colours[a] - colours[b]))
            if gap > CLOSE_GAP:
                continue
            pair = (labels == a + 1) | (labels == b + 1)
            if not pair.any():
                continue
            px = frame[pair].astype(np.float64)
            da = np.linalg.norm(px - colours[a], axis=1)
            db = np.linalg.norm(px - colours[b], axis=1)
            unsure = np.abs(da - db) < AMBIGUOUS_SHARE * gap
            if not unsure.any():
                continue
            sure = np.zeros(labels.shape, bool)
            sure[pair] = ~unsure
            votes_a = cv2.boxFilter(((labels == a + 1) & sure).astype(np.float32), -1, (7, 7), normalize=False)
            votes_b = cv2.boxFilter(((labels == b + 1) & sure).astype(np.float32), -1, (7, 7), normalize=False)
            where = np.zeros(labels.shape, bool)
            where[pair] = unsure
            va, vb = votes_a[where], votes_b[where]
            old = labels[where]
            labels[where] = np.where(va > vb, a + 1, np.where(vb > va, b + 1, old))


# ------------------------------------------------------------------------------------- maps -> spec


@dataclass
class DecodedMaps:
    """What `decode_maps` read: the trajectory, and the kind and palette it took the maps to be."""

    trajectory: Trajectory
    kind: str
    palette: str


def from_maps(maps: np.ndarray, kind: str | None = None, palette: str | None = None,
              source: str = "") -> Trajectory:
    """Trajectory maps, uint8 (T, H, W, 3), -> a Trajectory that renders to the same maps (see
    `decode_maps`)."""
    return decode_maps(maps, kind=kind, palette=palette, source=source).trajectory


def decode_maps(maps: np.ndarray, kind: str | None = None, palette: str | None = None,
                source: str = "") -> DecodedMaps:
    """Trajectory maps, uint8 (T, H, W, 3) RGB (as `render` draws them, or read back from a lossy
    video), -> a Trajectory that renders to the same maps.

    kind: "mask", "box", "sparse_box" or None (detect it); palette: "voc", "release" or None (detect
    it). Objects are told apart by colour; ids come from the palette. Frame 0 and every frame of
    `mask` maps give masks (and their tight boxes); outlines on frames 1.. give boxes; an object
    absent from a frame gets an empty mask there (`mask`, `box`) or no key (`sparse_box`)."""
    where = source or "maps"
    maps = np.asarray(maps)
    if maps.dtype != np.uint8 or maps.ndim != 4 or maps.shape[-1] != 3 or 0 in maps.shape:
        raise TrajectoryError(f"{where}: trajectory maps must be uint8 (T, H, W, 3), got "
                              f"{maps.dtype} {maps.shape}")
    if kind is not None and kind not in KINDS:
        raise TrajectoryError(f"{where}: unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    T, H, W = maps.shape[:3]
    if not _bright_video(maps).any():
        raise TrajectoryError(f"{where}: no objects found (every frame is black)")
    palette = detect_palette(maps, where) if palette is None else palette
    if palette not in PALETTES:
        raise TrajectoryError(f"{where}: unknown palette {palette!r}: expected one of {', '.join(PALETTES)}")
    colours, ids = _distinct(palette)
    thickness = box_thickness(W, H)
    # erosion tells solid colours from edge fringes: a colour counts where it covers a 3x3 square
    # (every object on frame 0 does; one seen only as outlines needs lines 3 px wide, 720x480 has 4-5)
    present = _present_colours(maps, colours, erode=True, where=where)
    if len(present) == 0:
        raise TrajectoryError(f"{where}: no objects found (no palette {palette!r} colour covers "
                              "more than a few pixels)")
    order = np.argsort(ids[present])
    present, object_ids = present[order], ids[present][order]
    labels = np.stack([_label_frame(frame, colours[present]) for frame in maps])
    lossless = _is_lossless(maps, colours)

    # per object and frame: absent, filled, outline or solid (a box too small for an inside)
    states: dict[tuple[int, int], str] = {}
    boxes: dict[tuple[int, int], np.ndarray] = {}
    for k in range(len(present)):
        for t in range(T):
            m = labels[t] == k + 1
            if not m.any():
                continue
            if t == 0:
                states[k, t] = "filled"
                continue
            if not lossless:
                m = outline_pixels(m, thickness)
            cover = labels[t] > k + 1
            boxes[k, t] = fit_box(m, thickness, palette, cover=cover)
            states[k, t] = outline_state(m, boxes[k, t], thickness, palette, cover)
    if kind is None:
        kind = _detect_kind(states, T, len(present), object_ids, where)
    if not lossless:
        _check_envelope(maps, colours, present, object_ids, labels, kind, thickness, where)

    traj = Trajectory(width=W, height=H, num_frames=T, source=source)
    for k, oid in enumerate(object_ids):
        obj = ObjectTrack(id=int(oid))
        for t in range(T):
            present_here = (k, t) in states
            if kind == "mask" or t == 0:
                if present_here or kind != "sparse_box":
                    m = labels[t] == k + 1
                    obj.masks[t] = encode_mask(m)
                    box = mask_box(m)
                    if box is not None:
                        obj.boxes[t] = box
            elif present_here:
                obj.boxes[t] = boxes[k, t]
            elif kind == "box":
                obj.masks[t] = encode_mask(np.zeros((H, W), bool))  # absent here
        traj.objects.append(obj)
    return DecodedMaps(traj.validate(), kind, palette)


def outline_pixels(mask: np.ndarray, thickness: int) -> np.ndarray:
    """An object's pixels on a frame of lossy box maps without the 1-px slivers that another
    object's blurred edge leaves in this colour: a 3x3 opening, which keeps outline bands of 3 px
    and more (the envelope's; thinner outlines are kept as they are, and so is a mask it would
    empty)."""
    if thickness < LOSSY_MIN_THICKNESS:
        return mask
    k3 = np.ones((3, 3), np.uint8)
    opened = cv2.dilate(cv2.erode(mask.astype(np.uint8), k3), k3).astype(bool) & mask
    return opened if opened.any() else mask


def _is_lossless(maps: np.ndarray, colours: np.ndarray) -> bool:
    """Every non-black pixel exactly a palette colour: PNG frames or a lossless video."""
    for frame in maps:
        bright = _bright(frame)
        if bright.any() and _nearest(frame[bright], colours)[1].max() > 0:
            return False
    return True


def _check_envelope(maps, colours, present, object_ids, labels, kind: str, thickness: int,
                    where: str) -> None:
    """Refuse (TrajectoryError) or warn where lossy maps are read outside what they keep (measured in
    docs/trajectory-format.md, "What map videos keep"): box outlines under LOSSY_MIN_THICKNESS px
    are lost to lossy video coding, so box maps that thin (or "mask" maps that are likely such box
    maps: objects on frame 0 that later frames lose) are refused; masks on a lossy video smaller
    than LOSSY_MASK_MIN_SIDE, and two objects whose colours a lossy video can shift into one another,
    give a warning."""
    import warnings

    T, H, W = maps.shape[:3]
    how = ("render them to PNG frames (--out DIR/) or a lossless video (`magicmotion trajectory "
           f"render` writes one), or at {100 * LOSSY_MIN_THICKNESS} px or more")
    if kind in ("box", "sparse_box") and thickness < LOSSY_MIN_THICKNESS:
        raise TrajectoryError(
            f"{where}: {kind} maps in a lossy video at {W}x{H}: their outlines ({thickness} px, "
            f"min(W, H) // 100) do not survive lossy coding, so the boxes cannot be read reliably; {how}")
    if kind == "mask" and thickness < LOSSY_MIN_THICKNESS and T > 1:
        on_first = [k for k in range(len(present)) if (labels[0] == k + 1).any()]
        # an outline's remains: gone on most later frames, or a small part of the frame-0 mask's area
        areas = {k: (labels == k + 1).sum(axis=(1, 2)) for k in on_first}
        lost = [k for k in on_first if (areas[k][1:] > 0).mean() < 0.5
                or np.median(areas[k][1:]) < OUTLINE_AREA_SHARE * areas[k][0]]
        if on_first and len(lost) > len(on_first) / 2:
            ids = ", ".join(str(int(object_ids[k])) for k in lost)
            raise TrajectoryError(
                f"{where}: object(s) {ids} fill frame 0 and leave little or nothing on most later "
                f"frames of this lossy video at {W}x{H}: box maps whose {thickness}-px outlines were "
                f"lost to the video coding, most likely; {how}")
    if kind == "mask" and min(W, H) < LOSSY_MASK_MIN_SIDE:
        warnings.warn(f"{where}: masks read from a lossy video at {W}x{H} lose their edges (object IoU "
                      f"down to 0.8 measured below {LOSSY_MASK_MIN_SIDE} px); PNG frames or a lossless "
                      "video read exactly", stacklevel=3)
    own = colours[present].astype(float)
    for a in range(len(present)):
        for b in range(a + 1, len(present)):
            if np.linalg.norm(own[a] - own[b]) > LOSSY_CLOSE_COLOURS:
                continue
            ka, kb = labels == a + 1, labels == b + 1
            near = cv2.dilate(ka.reshape(-1, W).astype(np.uint8), np.ones((3, 3), np.uint8)).reshape(ka.shape)
            touch = (near.astype(bool) & kb).sum()
            small, large = sorted((int(ka.sum()), int(kb.sum())))
            if touch >= 0.8 * small ** 0.5 and small < 0.25 * large:  # a small patch against a large one
                warnings.warn(
                    f"{where}: objects {int(object_ids[a])} and {int(object_ids[b])} have colours "
                    f"{np.linalg.norm(own[a] - own[b]):.0f} apart and touch: a lossy video can shift "
                    "one into the other (check them; PNG frames or a lossless video read exactly)",
                    stacklevel=3)


def _detect_kind(states: dict, num_frames: int, num_objects: int, object_ids, where: str) -> str:
    """mask when frames 1.. show filled shapes, box or sparse_box when they show outlines (sparse
    when some frame is black). A few shapes read the other way (an object mostly hidden behind
    another can leave a rim that looks like an outline) are outvoted; half and half is an error."""
    later = {key: s for key, s in states.items() if key[1] > 0 and s != "solid"}
    outlines = [key for key, s in later.items() if s == "outline"]
    filled = [key for key, s in later.items() if s == "filled"]
    if len(outlines) <= 0.1 * len(later):
        return "mask"
    if len(filled) > 0.1 * len(later):
        k, t = filled[0]
        ko, to = outlines[0]
        raise TrajectoryError(
            f"{where}: frame {t}: object {object_ids[k]} is a filled shape but object "
            f"{object_ids[ko]} on frame {to} is a box outline; maps of one kind have either (pass kind=)"
        )
    empty = [t for t in range(1, num_frames) if not any((k, t) in states for k in range(num_objects))]
    return "sparse_box" if empty else "box"
