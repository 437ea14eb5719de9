"""`magicmotion trajectory from-video | from-points`: thin wrappers over `from_video` and `tracks`.
Bad input raises MagicMotionError (one line, exit 2) before any output is written."""

from __future__ import annotations

import sys

from ..errors import TrajectoryError


def _progress_bar(desc: str):
    """A per-frame tqdm bar on stderr, and its update callback for `Sam2VideoTracker.track`."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="frame", file=sys.stderr, leave=False, disable=None)

    def update(frame: int, done: int, total: int) -> None:
        bar.total = total
        bar.set_postfix_str(f"frame {frame}", refresh=False)
        bar.update(done - bar.n)

    return bar, update


def _quiet_loading() -> None:
    """No "Loading weights" bars from transformers: the command shows its own per-frame progress, and
    an error stays one line."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _fit_target(args):
    """--fit-to / --fit-box read and checked before any model runs: (image or None, boxes or None)."""
    from ..io import read_image
    from .from_video import parse_box

    if args.fit_to is None:
        if args.fit_box:
            raise TrajectoryError("--fit-box needs --fit-to FIRST_FRAME.png")
        return None, None
    image = read_image(args.fit_to)
    boxes = [parse_box(b) for b in args.fit_box or []] or None
    h, w = image.shape[:2]
    for k, box in enumerate(boxes or []):
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise TrajectoryError(f"{args.fit_to}: --fit-box {k + 1} {[float(v) for v in box]} is outside the "
                                  f"{w}x{h} image (needs 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h})")
    return image, boxes


def _fit(traj, args, image, boxes, grounder_factory):
    """The motion placed on the new first frame (--fit-to), or traj as it is."""
    from .from_video import fit_to_image

    if image is None:
        return traj
    grounder = None if boxes else grounder_factory()
    return fit_to_image(traj, image, boxes, grounder, where=str(args.fit_to))


def _write(traj, out, args) -> None:
    from . import rescale, save
    from .from_video import describe

    if args.size is not None:
        traj = rescale(traj, args.size)
    if args.caption:
        traj.caption = args.caption
    save(traj.validate(), out)
    masks = all(len(o.masks) == traj.num_frames for o in traj.objects)
    kinds = "mask, box or sparse_box" if masks else "box or sparse_box"
    print(f"wrote {out}: {describe(traj)}; render it as {kinds}")


def from_video_command(args) -> int:
    from ..perception import load_grounder
    from .cli import check_output
    from .from_video import load_models, prepare, trajectory_from_video

    out = check_output(args.out, (".json",), folder_ok=False, inputs=[args.video, args.fit_to])
    frames, phrases, _ = prepare(args.video, args.objects, args.points, args.boxes, args.frame, args.start,
                                 args.num_frames, args.frame_step)
    image, boxes = _fit_target(args)
    from ..hub import require_models

    # every model the command will load, checked together: one line names all that are missing
    require_models(([(args.grounding, "Grounding DINO", "--grounding")] if phrases else [])
                   + [(args.sam2, "SAM 2", "--sam2")])
    _quiet_loading()
    loaded = {}

    def grounder():
        if "g" not in loaded:
            loaded["g"] = load_grounder(args.grounding, args.device, args.box_threshold, args.text_threshold)
        return loaded["g"]

    _, tracker = load_models(None, args.sam2, args.device)
    bar, update = _progress_bar("SAM 2")
    try:
        traj = trajectory_from_video(args.video, objects=phrases, points=args.points, boxes=args.boxes,
                                     frame=args.frame, frames=frames, grounder=grounder() if phrases else None,
                                     tracker=tracker, progress=update)
    finally:
        bar.close()
    _write(_fit(traj, args, image, boxes, grounder), out, args)
    return 0


def from_points_command(args) -> int:
    from ..perception import load_grounder
    from ..io import read_image
    from .cli import check_output
    from .from_video import parse_phrases
    from .label_masks import _read_label_png
    from .tracks import trajectory_from_tracks

    out = check_output(args.out, (".json",), folder_ok=False,
                       inputs=[args.tracks, args.image, args.visibility, args.ids, args.mask, args.fit_to])
    size = args.frame_size
    if size is None and args.image is not None:
        h, w = read_image(args.image).shape[:2]
        size = (w, h)
    masks = None
    if args.mask is not None:
        from pathlib import Path

        if not Path(args.mask).is_file():
            raise TrajectoryError(f"{args.mask}: mask not found")
        masks = _read_label_png(Path(args.mask))
    kwargs = {}
    if args.tracks.lower().endswith((".npy", ".npz")):
        kwargs = dict(visibility=args.visibility, ids=args.ids, labels=parse_phrases(args.labels), masks=masks)
    elif args.visibility or args.ids or args.labels or args.mask:
        raise TrajectoryError(f"{args.tracks}: --visibility, --ids, --labels and --mask are for .npy/.npz "
                              "tracks; a JSON file gives them per object")
    image, boxes = _fit_target(args)
    traj = trajectory_from_tracks(args.tracks, size, padding=args.padding, min_size=args.min_size, **kwargs)

    def grounder():
        _quiet_loading()
        return load_grounder(args.grounding, args.device, args.box_threshold, args.text_threshold)

    _write(_fit(traj, args, image, boxes, grounder), out, args)
    return 0


def _fit_arguments(p) -> None:
    p.add_argument("--fit-to", metavar="FIRST_FRAME", help="motion transfer: place the motion on this new "
                   "first frame (each object's frame-0 box moved and scaled onto its box there)")
    p.add_argument("--fit-box", action="append", metavar="x0,y0,x1,y1",
                   help="with --fit-to: the object's box in the new first frame (once per object, in object "
                        "order); without it the objects are found there by their names (Grounding DINO)")


def _model_arguments(p, sam2: bool) -> None:
    from ..perception import BOX_THRESHOLD, DEFAULT_GROUNDING, DEFAULT_SAM2, TEXT_THRESHOLD

    p.add_argument("--grounding", default=DEFAULT_GROUNDING, metavar="PATH_OR_ID",
                   help=f"Grounding DINO model (default {DEFAULT_GROUNDING})")
    if sam2:
        p.add_argument("--sam2", default=DEFAULT_SAM2, metavar="PATH_OR_ID",
                       help=f"SAM 2 video model (default {DEFAULT_SAM2})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when present)")
    p.add_argument("--box-threshold", type=float, default=BOX_THRESHOLD,
                   help=f"Grounding DINO box threshold ({BOX_THRESHOLD})")
    p.add_argument("--text-threshold", type=float, default=TEXT_THRESHOLD,
                   help=f"Grounding DINO text threshold ({TEXT_THRESHOLD})")


def register(sub) -> None:
    """Add from-video and from-points to the `trajectory` subparsers."""
    from .cli import _non_negative_int, _positive_float, _positive_int, parse_size

    p = sub.add_parser(
        "from-video", help="objects in a reference video (Grounding DINO + SAM 2) -> mask trajectory",
        description="Find objects on a frame of a reference video, by phrase (Grounding DINO) or by clicked "
                    "points / boxes, and track their masks through it with SAM 2 video (forwards, and "
                    "backwards when the frame is not the first). With --fit-to, the motion is placed on a "
                    "new first frame (motion transfer).",
    )
    p.add_argument("video", help="reference video (mp4, ...) or folder of frames")
    p.add_argument("--out", required=True, help="spec to write (.json)")
    p.add_argument("--objects", metavar="PHRASES", help='objects to find, e.g. "horse. child."')
    p.add_argument("--points", action="append", metavar="x,y[,frame]",
                   help="an object by clicked point(s) (x,y;x,y for several), on clip frame `frame` (0); "
                        "once per object")
    p.add_argument("--boxes", action="append", metavar="x0,y0,x1,y1[,frame]",
                   help="an object by its box on clip frame `frame` (0); once per object")
    p.add_argument("--frame", type=_non_negative_int, default=0,
                   help="clip frame the --objects are found on (0); SAM 2 also tracks backwards from it")
    p.add_argument("--start", type=_non_negative_int, default=0, help="first frame of the reference to use (0)")
    p.add_argument("--num-frames", type=_positive_int, metavar="T",
                   help="frames in the trajectory (default: to the end of the reference), e.g. 49")
    p.add_argument("--frame-step", type=_positive_int, default=1, help="use every k-th frame (1)")
    _fit_arguments(p)
    p.add_argument("--size", type=parse_size, metavar="WxH",
                   help="write the spec at this size (resize to cover, centre crop), e.g. 720x480")
    p.add_argument("--caption", default="", help="caption stored in the spec")
    _model_arguments(p, sam2=True)
    p.set_defaults(func=from_video_command)

    p = sub.add_parser(
        "from-points", help="point tracks (JSON, or a tracker's .npy/.npz) -> box (and mask) trajectory",
        description="Boxes around each object's visible points on every frame (padded, with a minimum size); "
                    "with a frame-0 mask, masks moved by the points' mean motion. Occluded frames get no "
                    "key box, frames the object has left an empty mask. See docs/trajectory-format.md.",
    )
    p.add_argument("tracks", help="tracks.json, tracks.npy ((T, N, 2) positions) or tracks.npz")
    p.add_argument("--out", required=True, help="spec to write (.json)")
    p.add_argument("--frame-size", type=parse_size, metavar="WxH",
                   help=".npy/.npz: the frame size the points are in (or --image)")
    p.add_argument("--image", help=".npy/.npz: the first frame, for its size")
    p.add_argument("--visibility", metavar="NPY", help=".npy: visibility (T, N), bool or probability")
    p.add_argument("--ids", metavar="NPY", help=".npy/.npz: object id of each track (N,) (default: one object)")
    p.add_argument("--labels", metavar="NAMES", help='.npy/.npz: object names in id order, e.g. "horse. child."')
    p.add_argument("--mask", metavar="PNG", help=".npy/.npz: frame-0 label PNG (value = object id) for masks")
    p.add_argument("--padding", type=float, default=0.05,
                   help="box padding, a fraction of its width / height on each side (0.05)")
    p.add_argument("--min-size", type=_positive_float, default=16.0, help="smallest box side in pixels (16)")
    _fit_arguments(p)
    p.add_argument("--size", type=parse_size, metavar="WxH",
                   help="write the spec at this size (resize to cover, centre crop)")
    p.add_argument("--caption", default="", help="caption stored in the spec (default: the tracks')")
    _model_arguments(p, sam2=False)
    p.set_defaults(func=from_points_command)
