"""A synthetic world of moving objects: the stand-in for real video data in tests and for training the
tiny demo model.

A clip is a textured, muted background (smooth noise, a gradient or stripes; in about a third of the
clips it drifts as a slow camera pan) and 1..5 saturated, textured objects (circles, squares,
triangles, stars, ...) that move along smooth random paths (curves, turns, stops), grow or shrink,
turn, and occlude one another by z-order. The renderer returns exact per-frame label images (value =
object id after occlusion), so masks and boxes are exact. Clip k of `synthesize(seed=s)` is drawn
from `np.random.default_rng([s, k])`: it does not depend on how many clips are written.

Drawing is vectorised numpy over a small window around each object on every frame; each shape is a
polygon that is star-shaped about its centre (or a circle), tested with one half-plane per pixel.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError

# Saturated object colours (RGB); backgrounds are muted (low saturation), so objects stand out.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (250, 135, 15),
    "yellow": (245, 220, 25),
    "green": (40, 195, 55),
    "cyan": (25, 215, 225),
    "blue": (40, 75, 235),
    "purple": (150, 45, 215),
    "pink": (245, 85, 185),
}

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross")
TEXTURES = ("solid", "striped", "checkered", "shaded")
BACKGROUNDS = ("cloudy", "gradient", "striped")
PAN_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

# Every word a caption can use, in a fixed order (the tiny text tokenizer is built from it).
VOCABULARY: list[str] = [
    "a", "an", "and", "moving", "over", "background", "while", "the", "camera", "pans",
    *COLORS, *SHAPES, *BACKGROUNDS, *PAN_DIRECTIONS,
]

# Texture brightness lies in [TEXTURE_MIN, 1]: an object pixel is its colour times that factor.
TEXTURE_MIN = 0.6


# ------------------------------------------------------------------------------------------ shapes


def _polygon(points) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star(points: int = 5, outer: float = 1.15, inner: float = 0.5) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross(arm: float = 0.38) -> np.ndarray:
    w = arm
    return _polygon([(1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
                     (-w, -1), (w, -1), (w, -w)])


# Vertices in units of the object's radius (y down); each polygon is star-shaped about (0, 0).
POLYGONS = {
    "square": _regular(4, 1.1, np.pi / 4),
    "triangle": _regular(3, 1.2, -np.pi / 2) + [0.0, 0.2],
    "diamond": _regular(4, 1.1, 0.0),
    "hexagon": _regular(6, 1.0, 0.0),
    "star": _star(),
    "cross": _cross(),
}


def _edge_table(vertices: np.ndarray):
    """Per polygon edge (sorted by angle about the centre, wrapped): start angles and the half-plane
    u * ey - v * ex <= c that holds inside."""
    ang = np.arctan2(vertices[:, 1], vertices[:, 0])
    order = np.argsort(ang)
    v, ang = vertices[order], ang[order]
    v = np.concatenate([v[-1:], v, v[:1]])
    ang = np.concatenate([ang[-1:] - 2 * np.pi, ang, ang[:1] + 2 * np.pi])
    a, b = v[:-1], v[1:]
    ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    c = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return ang[:-1], ex, ey, c


_EDGES = {name: _edge_table(v) for name, v in POLYGONS.items()}
# How far each shape reaches from its centre, in units of its radius.
_REACH = {"circle": 1.0,
          **{name: float(np.linalg.norm(v, axis=1).max()) for name, v in POLYGONS.items()}}


def shape_mask(shape: str, centers: np.ndarray, radii: np.ndarray, angles: np.ndarray,
               size: tuple[int, int]) -> np.ndarray:
    """The silhouette of one object on every frame, ignoring occlusion.

    centers: float (T, 2) pixel x, y (pixel (i, j) has its centre at x = j + 0.5, y = i + 0.5);
    radii: float (T,) in pixels; angles: float (T,) radians; size: (W, H). Returns bool (T, H, W)."""
    w, h = size
    t, y, x, _, _ = object_pixels(shape, centers, radii, angles, size)
    mask = np.zeros((len(radii), h, w), dtype=bool)
    mask[t, y, x] = True
    return mask


def object_pixels(shape: str, centers: np.ndarray, radii: np.ndarray, angles: np.ndarray,
                  size: tuple[int, int]):
    """The pixels one object covers (ignoring occlusion), found in a small window around it on each
    frame: int arrays t, y, x and the object's own coordinates u, v there (units of its radius;
    textures are functions of u, v)."""
    w, h = size
    centers = np.asarray(centers, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    angles = np.asarray(angles, dtype=np.float64)
    if shape not in _REACH:
        raise DatasetError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")
    side = int(np.ceil(2 * _REACH[shape] * radii.max())) + 2
    steps = np.arange(side)
    xs = np.floor(centers[:, 0] - side / 2).astype(np.int64)[:, None] + steps  # (T, S) columns
    ys = np.floor(centers[:, 1] - side / 2).astype(np.int64)[:, None] + steps  # (T, S) rows
    dx = ((xs + 0.5 - centers[:, :1]) / radii[:, None])[:, None, :]
    dy = ((ys + 0.5 - centers[:, 1:]) / radii[:, None])[:, :, None]
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # (T, S, S)
    inside = _inside(shape, u, v)
    inside &= ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    t, i, j = np.nonzero(inside)
    return t, ys[t, i], xs[t, j], u[t, i, j], v[t, i, j]


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape not in _EDGES:
        raise DatasetError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")
    start, ex, ey, c = _EDGES[shape]
    k = np.searchsorted(start, np.arctan2(v, u), side="right") - 1
    return u * ey[k] - v * ex[k] <= c[k]


def texture_factor(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brightness in [TEXTURE_MIN, 1] of an object's texture at local coordinates u, v (it moves,
    turns and scales with the object)."""
    if texture == "solid":
        return np.ones_like(u)
    if texture == "striped":
        return np.where(np.floor(u * 2.5) % 2 == 0, 1.0, TEXTURE_MIN)
    if texture == "checkered":
        return np.where((np.floor(u * 2.0) + np.floor(v * 2.0)) % 2 == 0, 1.0, TEXTURE_MIN + 0.1)
    if texture == "shaded":
        return np.clip(1.0 - 0.35 * ((u + 0.3) ** 2 + (v + 0.3) ** 2), TEXTURE_MIN, 1.0)
    raise DatasetError(f"unknown texture {texture!r} (one of {', '.join(TEXTURES)})")


# ------------------------------------------------------------------------------------------ scenes


@dataclass
class SceneObject:
    """One object of a clip: appearance, z (larger is in front) and its per-frame pose."""

    id: int
    shape: str
    color_name: str
    texture: str
    z: int
    centers: np.ndarray  # float (T, 2) x, y in pixels
    radii: np.ndarray  # float (T,) pixels
    angles: np.ndarray  # float (T,) radians

    @property
    def color(self) -> tuple[int, int, int]:
        return COLORS[self.color_name]

    @property
    def label(self) -> str:
        return f"{self.color_name} {self.shape}"

    def as_dict(self) -> dict:
        return {"id": self.id, "shape": self.shape, "color_name": self.color_name,
                "color": self.color, "texture": self.texture, "z": self.z, "label": self.label,
                "centers": self.centers, "radii": self.radii, "angles": self.angles}


@dataclass
class Scene:
    """Everything needed to render a clip."""

    size: tuple[int, int]  # (W, H)
    num_frames: int
    background: str
    colors: np.ndarray  # float (2, 3): the background's two muted colours
    params: dict  # background parameters (angle, period, waves, ...)
    pan: str | None  # camera pan direction, or None
    pan_offsets: np.ndarray  # float (T, 2): where the camera looks, x, y in pixels
    objects: list[SceneObject] = field(default_factory=list)


def caption_for(scene: Scene) -> str:
    """"a red star and a blue square moving over a striped background while the camera pans left"."""
    parts = [f"{'an' if o.color_name[0] in 'aeiou' else 'a'} {o.color_name} {o.shape}"
             for o in sorted(scene.objects, key=lambda o: o.id)]
    text = " and ".join(parts) + f" moving over a {scene.background} background"
    if scene.pan:
        text += f" while the camera pans {scene.pan}"
    return text


class SyntheticWorld:
    """Samples and renders clips of moving objects.

    size: (W, H); num_frames: T; objects per clip uniform in min_objects..max_objects; pan_prob: the
    share of clips with a slow camera pan; radius: object radius range as a fraction of min(W, H)
    (clamped to at least min_radius_px so objects stay clearly visible at 64x64); speed: mean speed
    range in pixels per frame at 64 px (scaled with the frame)."""

    def __init__(self, size: tuple[int, int] = (64, 64), num_frames: int = 17, max_objects: int = 5,
                 pan_prob: float = 0.3, min_objects: int = 1, radius: tuple[float, float] = (0.09, 0.16),
                 min_radius_px: float = 5.2, speed: tuple[float, float] = (0.4, 1.8),
                 min_visible: float = 0.5):
        w, h = int(size[0]), int(size[1])
        if w < 16 or h < 16:
            raise DatasetError(f"synthetic clips must be at least 16x16, got {w}x{h}")
        if num_frames < 1:
            raise DatasetError(f"num_frames must be >= 1, got {num_frames}")
        if not 1 <= min_objects <= max_objects <= len(COLORS):
            raise DatasetError(f"need 1 <= min_objects <= max_objects <= {len(COLORS)}, "
                               f"got {min_objects}..{max_objects}")
        if not 0.0 <= pan_prob <= 1.0:
            raise DatasetError(f"pan_prob must be in [0, 1], got {pan_prob}")
        self.size = (w, h)
        self.num_frames = int(num_frames)
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)
        self.pan_prob = float(pan_prob)
        self.radius = radius
        self.min_radius_px = min_radius_px
        self.speed = speed
        self.min_visible = min_visible

    # -------------------------------------------------------------------------------- sampling

    def sample(self, rng: np.random.Generator):
        """One clip: (frames uint8 (T, H, W, 3), labels int32 (T, H, W) = object id after occlusion
        (0 = background), caption, objects: list of dicts (id, shape, color_name, color, texture, z,
        label, centers, radii, angles))."""
        scene = self.sample_scene(rng)
        frames, labels = self.render(scene)
        return frames, labels, caption_for(scene), [o.as_dict() for o in scene.objects]

    def sample_scene(self, rng: np.random.Generator) -> Scene:
        w, h = self.size
        t = self.num_frames
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        colors = _muted_pair(rng)
        params = self._background_params(rng, background)
        pan, pan_offsets = None, np.zeros((t, 2))
        if rng.random() < self.pan_prob:
            pan = list(PAN_DIRECTIONS)[rng.integers(len(PAN_DIRECTIONS))]
            speed = rng.uniform(0.4, 0.9) * min(w, h) / 64
            pan_offsets = np.arange(t)[:, None] * speed * np.array(PAN_DIRECTIONS[pan])[None, :]
        scene = Scene(self.size, t, background, colors, params, pan, pan_offsets)
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        names = rng.choice(len(COLORS), size=n, replace=False)
        for i in range(n):
            scene.objects.append(SceneObject(
                id=i + 1, shape=SHAPES[rng.integers(len(SHAPES))],
                color_name=list(COLORS)[names[i]], texture=TEXTURES[rng.integers(len(TEXTURES))],
                z=0, centers=np.zeros((t, 2)), radii=np.zeros(t), angles=np.zeros(t)))
        # poses and z-order, redrawn until every object is clearly visible on frame 0
        best, best_score = None, -1.0
        for _ in range(12):
            z = rng.permutation(n)
            for o, zi in zip(scene.objects, z):
                o.z = int(zi)
                o.centers, o.radii, o.angles = self._pose(rng, o.shape)
            score = self._frame0_visibility(scene)
            if score >= self.min_visible:
                return scene
            if score > best_score:
                best = [(o.z, o.centers, o.radii, o.angles) for o in scene.objects]
                best_score = score
        for o, (zi, c, r, a) in zip(scene.objects, best):
            o.z, o.centers, o.radii, o.angles = zi, c, r, a
        return scene

    def _background_params(self, rng, kind: str) -> dict:
        s = min(self.size)
        if kind == "gradient":
            return {"angle": rng.uniform(0, 2 * np.pi), "extent": rng.uniform(0.8, 1.5) * s}
        if kind == "striped":
            return {"angle": rng.uniform(0, np.pi), "period": rng.uniform(0.12, 0.3) * s,
                    "sharpness": rng.uniform(1.5, 4.0)}
        # cloudy: a sum of a few low-frequency waves
        k = 5
        return {"freqs": rng.uniform(0.5, 2.5, k) / s * 2 * np.pi,
                "angles": rng.uniform(0, 2 * np.pi, k), "phases": rng.uniform(0, 2 * np.pi, k)}

    def _pose(self, rng, shape: str):
        """A smooth path through 2..4 key points (with an occasional stop), a size that grows or
        shrinks and a slow turn: centers (T, 2), radii (T,), angles (T,)."""
        w, h = self.size
        t = self.num_frames
        s = min(w, h)
        r0 = max(rng.uniform(*self.radius) * s, self.min_radius_px)
        growth = rng.uniform(-0.3, 0.3) if rng.random() < 0.6 else 0.0
        ramp = np.linspace(0.0, 1.0, t)
        radii = np.maximum(r0 * (1.0 + growth * ramp), self.min_radius_px)
        turn = 0.0 if shape == "circle" or rng.random() < 0.4 else rng.uniform(-0.08, 0.08)
        angles = rng.uniform(0, 2 * np.pi) + turn * np.arange(t)
        # keep the centre inside the frame so every object stays at least partly visible
        lo = np.array([0.6 * radii.max(), 0.6 * radii.max()])
        hi = np.array([w, h]) - lo
        centers = _smooth_path(rng, t, lo, hi, rng.uniform(*self.speed) * s / 64)
        return np.clip(centers, lo, hi), radii, angles

    def _frame0_visibility(self, scene: Scene) -> float:
        """The smallest share of any object's own silhouette left visible on frame 0."""
        objs = sorted(scene.objects, key=lambda o: -o.z)  # front first
        covered = np.zeros(self.size[::-1], dtype=bool)
        worst = 1.0
        for o in objs:
            m = shape_mask(o.shape, o.centers[:1], o.radii[:1], o.angles[:1], self.size)[0]
            area = m.sum()
            worst = min(worst, (m & ~covered).sum() / area if area else 0.0)
            covered |= m
        return worst

    # ------------------------------------------------------------------------------- rendering

    def render_background(self, scene: Scene) -> np.ndarray:
        """float32 (T, H, W, 3) background, moving with the camera pan."""
        w, h = scene.size
        x = (np.arange(w) + 0.5)[None, None, :] + scene.pan_offsets[:, 0, None, None]
        y = (np.arange(h) + 0.5)[None, :, None] + scene.pan_offsets[:, 1, None, None]
        p = scene.params
        if scene.background == "gradient":
            d = (x - w / 2) * math.cos(p["angle"]) + (y - h / 2) * math.sin(p["angle"])
            f = np.clip(0.5 + d / p["extent"], 0.0, 1.0)
        elif scene.background == "striped":
            d = x * math.cos(p["angle"]) + y * math.sin(p["angle"])
            f = 0.5 + 0.5 * np.tanh(p["sharpness"] * np.sin(2 * np.pi * d / p["period"]))
        else:
            f = 0.0
            for k, a, ph in zip(p["freqs"], p["angles"], p["phases"]):
                f = f + np.sin(k * (x * math.cos(a) + y * math.sin(a)) + ph)
            f = 0.5 + 0.5 * np.tanh(f / 2.0)
        f = np.asarray(f, dtype=np.float32)[..., None]
        c0, c1 = scene.colors.astype(np.float32)
        return c0 + (c1 - c0) * f

    def render(self, scene: Scene):
        """(frames uint8 (T, H, W, 3), labels int32 (T, H, W)): objects drawn back to front."""
        w, h = scene.size
        frames = self.render_background(scene)
        labels = np.zeros((scene.num_frames, h, w), dtype=np.int32)
        for o in sorted(scene.objects, key=lambda o: o.z):  # back to front
            t, y, x, u, v = object_pixels(o.shape, o.centers, o.radii, o.angles, scene.size)
            frames[t, y, x] = np.asarray(o.color, np.float32) * texture_factor(o.texture, u, v)[:, None]
            labels[t, y, x] = o.id
        return np.clip(frames + 0.5, 0, 255).astype(np.uint8), labels


def _muted_pair(rng) -> np.ndarray:
    """Two muted colours (low saturation, mid brightness) of nearby hues: float (2, 3) RGB."""
    import colorsys

    hue = rng.uniform()
    out = []
    for i in range(2):
        hh = (hue + rng.uniform(-0.08, 0.08)) % 1.0
        sat = rng.uniform(0.05, 0.28)
        val = rng.uniform(0.3, 0.5) if i == 0 else rng.uniform(0.55, 0.75)
        out.append(np.array(colorsys.hsv_to_rgb(hh, sat, val)) * 255)
    return np.stack(out)


def _smooth_path(rng, t: int, lo: np.ndarray, hi: np.ndarray, speed: float) -> np.ndarray:
    """Centres (t, 2) through 2..4 key points joined by cubic Hermite curves (Catmull-Rom tangents);
    an occasional stop holds a key point with zero velocity. Key points bounce off the frame edges."""
    if t == 1:
        return rng.uniform(lo, hi)[None, :]
    n_keys = int(rng.integers(2, 5)) if t >= 5 else 2
    key_t = np.linspace(0, t - 1, n_keys)
    if n_keys > 2:
        gap = (t - 1) / (n_keys - 1)
        key_t[1:-1] += rng.uniform(-0.25, 0.25, n_keys - 2) * gap
    points = [rng.uniform(lo, hi)]
    heading = rng.uniform(0, 2 * np.pi)
    stops = np.zeros(n_keys, dtype=bool)
    for k in range(1, n_keys):
        if k < n_keys - 1 and n_keys > 2 and rng.random() < 0.15:
            points.append(points[-1].copy())  # a stop
            stops[k - 1] = stops[k] = True
            continue
        heading += rng.uniform(-1.7, 1.7) if k > 1 else 0.0
        step = speed * (key_t[k] - key_t[k - 1]) * rng.uniform(0.6, 1.4)
        p = points[-1] + step * np.array([math.cos(heading), math.sin(heading)])
        # reflect off the edges (and turn the heading with it)
        for axis in range(2):
            span = hi[axis] - lo[axis]
            q = (p[axis] - lo[axis]) % (2 * span) if span > 0 else 0.0
            if q > span:
                q = 2 * span - q
                heading = math.pi - heading if axis == 0 else -heading
            p[axis] = lo[axis] + q
        points.append(p)
    pts = np.stack(points)
    tangents = np.zeros_like(pts)
    for k in range(n_keys):
        if stops[k]:
            continue
        a, b = max(k - 1, 0), min(k + 1, n_keys - 1)
        tangents[k] = (pts[b] - pts[a]) / (key_t[b] - key_t[a])
    times = np.arange(t, dtype=np.float64)
    seg = np.clip(np.searchsorted(key_t, times, side="right") - 1, 0, n_keys - 2)
    t0, t1 = key_t[seg], key_t[seg + 1]
    dt = (t1 - t0)[:, None]
    s = ((times - t0) / (t1 - t0))[:, None]
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * pts[seg] + h10 * dt * tangents[seg] + h01 * pts[seg + 1] + h11 * dt * tangents[seg + 1]


# ------------------------------------------------------------------------------------ datasets


def clip_id(seed: int, index: int) -> str:
    """The id of clip `index` of a synthetic dataset drawn with `seed`."""
    return f"synth-s{seed}-{index:06d}"


def split_for(seed: int, index: int, test_fraction: float) -> str:
    """"train" or "test", fixed by (seed, index) through a hash: the same clip always gets the same
    split whatever the number of clips."""
    u = zlib.crc32(f"{seed}:{index}".encode()) / 2**32
    return "test" if u < test_fraction else "train"


def synthesize(out: str | os.PathLike, clips: int, frames: int = 17, size: tuple[int, int] = (64, 64),
               seed: int = 0, test_fraction: float = 0.1, fps: float = 8.0, max_objects: int = 5,
               pan_prob: float = 0.3, progress: bool = True, world: SyntheticWorld | None = None
               ) -> list[dict]:
    """Write clips 0..clips-1 of the synthetic world into the dataset at `out` (created if missing).
    Clips already in the index are skipped, so a re-run after a crash completes the dataset.
    Returns the index records of the clips written now."""
    from tqdm import tqdm

    from ..trajectory import from_label_masks
    from .dataset import DatasetWriter

    from ..limits import MAX_FPS, check_frames, check_int, check_number, check_seed, check_size

    # every argument first: a bad one leaves nothing on disk
    if seed < 0:
        raise DatasetError(f"--seed must be >= 0, got {seed}")
    check_seed(seed, "--seed", error=DatasetError)
    check_int(clips, "--clips", lo=0, hi=10**7, error=DatasetError)
    check_number(test_fraction, "--test-fraction", lo=0.0, hi=1.0, error=DatasetError)
    check_number(fps, "--fps", lo=1e-3, hi=MAX_FPS, error=DatasetError)
    check_frames(frames, name="--frames", error=DatasetError)
    check_size(*size, error=DatasetError, what="--size")
    world = world or SyntheticWorld(size=size, num_frames=frames, max_objects=max_objects,
                                    pan_prob=pan_prob)
    writer = DatasetWriter(out)
    done = writer.ids()
    written = []
    for k in tqdm(range(clips), desc=f"synth {Path(out).name}", unit="clip", disable=not progress):
        cid = clip_id(seed, k)
        if cid in done:
            continue
        scene = world.sample_scene(np.random.default_rng([seed, k]))
        video, labels = world.render(scene)
        caption = caption_for(scene)
        traj = from_label_masks(labels, caption, labels_by_id={o.id: o.label for o in scene.objects})
        written.append(writer.add(cid, video, traj, caption, fps=fps,
                                  split=split_for(seed, k, test_fraction), source="synthetic",
                                  background=scene.background, camera_pan=scene.pan))
    return written
