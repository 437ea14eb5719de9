"""`magicmotion trajectory render | from-masks | from-maps | preview` (from-video and from-points:
motion_cli.py): thin wrappers over the trajectory layer and `magicmotion.io`. Bad input raises
MagicMotionError (one line, exit 2) before any output is written."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ..errors import MediaError, TrajectoryError

RENDER_SUFFIXES = (".mp4", ".gif")


def parse_size(text: str) -> tuple[int, int]:
    """'720x480' -> (720, 480) (width x height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT such as 720x480, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _number(convert, ok, what: str):
    """An argparse type: `convert(text)` (int, float) when `ok` holds for it, else "must be WHAT"."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
_alpha = _number(float, lambda v: 0 <= v <= 1, "between 0 and 1")
_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "0 or more")


def is_frames_folder(out: str) -> bool:
    """`--out DIR/` (a trailing slash) or an existing folder means PNG frames."""
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


def check_output(out: str, suffixes: tuple[str, ...], folder_ok: bool, inputs=()) -> Path:
    """Check an output path before any work: its type is known, and `paths.check_output` (its folder
    exists and can be written, it is none of `inputs` nor inside or over one, nor in a dataset)."""
    from ..paths import check_output as check_output_path

    path = Path(out)
    if folder_ok and is_frames_folder(out):
        if path.exists() and not path.is_dir():
            raise MediaError(f"{path}: is a file, expected a folder for PNG frames")
        parent = path.parent if str(path.parent) else Path(".")
        if not path.is_dir() and not parent.is_dir():
            raise MediaError(f"{path}: output folder {parent} does not exist")
        return check_output_path(path, inputs, error=MediaError, folder=True)
    if path.suffix.lower() not in suffixes:
        also = " or a folder ending in /" if folder_ok else ""
        raise MediaError(f"{path}: unknown output type: use {', '.join(suffixes)}{also}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MediaError(f"{path}: output folder {parent} does not exist")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, expected a file name")
    return check_output_path(path, inputs, error=MediaError)


# ---------------------------------------------------------------------------------------- commands


def read_any(path, kind: str | None, palette: str | None, controlnet: str | None, base: str | None = None):
    """A spec (.json), or rendered maps (a video or a folder of frames) read back into one.

    Returns (trajectory, kind, palette): kind as given, else the maps' (box for a spec); palette as
    given, else the model's (`--controlnet` / `--base`: the one it was trained with), else the maps'
    own, else voc (the shipped tiny model's)."""
    from . import load

    model_palette = None
    if palette is None and (controlnet is not None or base is not None):
        from ..pipelines.loading import model_settings

        model_palette = model_settings(base, controlnet, kind or "box")[1]["trajectory_palette"]
    p = Path(path)
    if p.suffix.lower() == ".json":
        return load(p), kind or "box", palette or model_palette or "voc"
    from .decode import decode_maps, load_maps

    decoded = decode_maps(load_maps(p), source=str(p))
    return decoded.trajectory, kind or decoded.kind, palette or model_palette or decoded.palette


def render_command(args) -> int:
    from ..io import write_frames, write_preview
    from . import render, sparsify

    from ..limits import check_seed, check_size, check_video_size

    out = check_output(args.out, RENDER_SUFFIXES, folder_ok=True, inputs=[args.spec])
    if args.size is not None:
        check_size(*args.size, error=TrajectoryError, what="--size")
    if args.seed is not None:
        check_seed(args.seed, "--seed", error=TrajectoryError)
    traj, args.kind, args.palette = read_any(args.spec, args.kind, args.palette, args.controlnet, args.base)
    check_video_size(*(args.size or traj.size), traj.num_frames, str(args.spec), TrajectoryError)
    if args.keys is not None or args.seed is not None:
        if args.kind == "mask":
            raise TrajectoryError("--keys and --seed make sparse key boxes: use --kind box or sparse_box")
        mode = "random" if args.seed is not None else "even"
        traj = sparsify(traj, num_keys=args.keys, mode=mode, seed=args.seed)
    maps = render(traj, args.kind, size=args.size, palette=args.palette)
    if is_frames_folder(args.out):
        write_frames(out, maps)
    elif out.suffix.lower() == ".gif":
        write_preview(out, maps, fps=args.fps)
    else:
        from .render import write_maps_video

        write_maps_video(out, maps, fps=args.fps)  # lossless: reads back exactly (from-maps, generate)
    t, h, w, _ = maps.shape
    print(f"wrote {out}: {args.kind} maps, {t} frames, {w}x{h}, palette {args.palette}")
    return 0


def from_masks_command(args) -> int:
    import warnings

    from . import from_mask_frames, save
    from .ops import frames_hint

    out = check_output(args.out, (".json",), folder_ok=False, inputs=[args.folder])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = from_mask_frames(args.folder, num_frames=args.num_frames, fill=args.fill, annotation=args.annotation)
    for w in caught:
        print(f"magicmotion: warning: {w.message}", file=sys.stderr)
    if args.caption:
        traj.caption = args.caption
    save(traj.validate(), out)
    annotated = sum(1 for p in Path(args.folder).iterdir() if p.suffix.lower() == ".png" and p.is_file())
    filled = "" if args.fill == "none" else f", the others filled ({args.fill})"
    print(f"wrote {out}: {len(traj.objects)} objects (ids {', '.join(map(str, traj.ids))}), masks on "
          f"{annotated} of {traj.num_frames} frames{filled}, {traj.width}x{traj.height}")
    hint = frames_hint(traj.num_frames, "rerun with --num-frames", trim=False)
    if hint:  # frames before the last annotated one cannot be cut here; generate --frames can
        print(f"magicmotion: note: {out}: {hint}, or give generate --frames", file=sys.stderr)
    return 0


def from_maps_command(args) -> int:
    from . import save
    from .decode import decode_maps, load_maps

    import warnings

    out = check_output(args.out, (".json",), folder_ok=False, inputs=[args.maps])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_maps(load_maps(args.maps), kind=args.kind, palette=args.palette, source=args.maps)
    for w in caught:
        print(f"magicmotion: warning: {w.message}", file=sys.stderr)
    traj = decoded.trajectory
    if args.caption:
        traj.caption = args.caption
    save(traj, out)
    print(f"wrote {out}: {len(traj.objects)} objects (ids {', '.join(map(str, traj.ids))}), "
          f"{decoded.kind} maps, palette {decoded.palette}, {traj.num_frames} frames, "
          f"{traj.width}x{traj.height}")
    return 0


def preview_command(args) -> int:
    from ..io import PREVIEW_SUFFIXES, read_image, read_video, write_preview
    from . import preview_frames

    from ..limits import check_size, check_video_size

    out = check_output(args.out, PREVIEW_SUFFIXES, folder_ok=False, inputs=[args.spec, args.image, args.video])
    if args.size is not None:
        check_size(*args.size, error=TrajectoryError, what="--size")
    traj, args.kind, args.palette = read_any(args.spec, args.kind, args.palette, args.controlnet, args.base)
    check_video_size(*(args.size or traj.size), traj.num_frames, str(args.spec), TrajectoryError)
    if args.image is not None:
        image = read_image(args.image)
    else:
        image, _ = read_video(args.video, max_frames=traj.num_frames)
    frames, maps = preview_frames(traj, image, kind=args.kind, size=args.size, palette=args.palette)
    write_preview(out, frames, maps, fps=args.fps, alpha=args.alpha)
    t, h, w, _ = maps.shape
    print(f"wrote {out}: {args.kind} trajectory over {t} frames, {w}x{h}")
    return 0


# ---------------------------------------------------------------------------------------- parsers


def _palette_arguments(p) -> None:
    """--palette, --controlnet, --base: the palette of the maps, given or taken from a model."""
    from .palette import PALETTES

    p.add_argument("--palette", choices=PALETTES, default=None,
                   help="colours and box outlines: voc (ours, the tiny model's) or release (the authors' "
                        "release's: supervision's palette at 50%% over black, cv2.rectangle outlines); "
                        "default: the palette of --controlnet / --base, else the maps' own, else voc (the "
                        "shipped tiny model's)")
    p.add_argument("--controlnet", metavar="PATH",
                   help="take the palette from this model (the one its ControlNet was trained with)")
    p.add_argument("--base", metavar="PATH_OR_ID", help="with --controlnet: its base (default: the shipped tiny model)")


def register(subparsers) -> None:
    from .palette import PALETTES
    from .render import KINDS
    from .sparse import ANNOTATIONS, DEFAULT_FILL, FILLS

    parser = subparsers.add_parser(
        "trajectory", help="render trajectory maps, read mask folders or maps, preview a trajectory",
        description="Trajectory specs (docs/trajectory-format.md): render them to trajectory maps, "
                    "make them from DAVIS-style mask folders, preview them over the first frame.",
    )
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    sub = parser.add_subparsers(dest="trajectory_command", metavar="COMMAND")

    p = sub.add_parser(
        "render", help="render a spec to trajectory maps (mp4, gif or PNG frames)",
        description="Render a trajectory spec to trajectory maps: black background, one palette "
                    "colour per object id; frame 0 of box and sparse_box is the filled mask.",
    )
    p.add_argument("spec", help="trajectory spec (JSON), or maps (a video or a folder of frames) to re-render")
    p.add_argument("--kind", choices=KINDS, default=None, help="map kind (default: box; for maps, theirs)")
    p.add_argument("--out", required=True,
                   help="X.mp4 (H.264), X.gif, or DIR/ (PNG frames 00000.png, ...)")
    p.add_argument("--size", type=parse_size, metavar="WxH",
                   help="render at this size (resize to cover, centre crop), e.g. 720x480")
    p.add_argument("--keys", type=int, metavar="N",
                   help="keep frame 0 and N (1..9) key boxes first, evenly spaced (random with --seed)")
    p.add_argument("--seed", type=int,
                   help="choose the key frames (and their number, without --keys) at random")
    p.add_argument("--fps", type=_positive_float, default=8.0, help="frame rate of mp4/gif (8)")
    _palette_arguments(p)
    p.set_defaults(func=render_command)

    p = sub.add_parser(
        "from-masks", help="DAVIS-style folder of palette PNGs -> spec",
        description="Read a folder of palette PNGs (one per annotated frame, 00000.png ..., pixel "
                    "value = object id; 16-bit and grey PNGs too) into a mask trajectory spec with boxes "
                    "from the masks, the frames between annotated ones filled (--fill).",
    )
    p.add_argument("folder", help="folder of mask PNGs")
    p.add_argument("--out", required=True, help="spec to write (.json)")
    p.add_argument("--num-frames", type=int, metavar="T",
                   help="frames in the video (default: the last annotated frame + 1); generation needs 4k + 1 "
                        "(5, 9, 13, 17, ..., 49): frames after the last annotated one hold its objects")
    p.add_argument("--fill", choices=FILLS, default=DEFAULT_FILL,
                   help="frames between annotated ones: shift (default: the nearer annotated mask moved and "
                        "scaled with the box, linear between the annotated boxes), box (boxes only, linear), "
                        "hold (the last annotated mask), none (masks on annotated frames only); objects keep "
                        "their state before their first and after their last annotated frame "
                        "(docs/trajectory-format.md)")
    p.add_argument("--annotation", choices=ANNOTATIONS, default="auto",
                   help="complete: each PNG shows every object there (one missing is absent on that frame, as "
                        "in DAVIS); incremental: each PNG after the first only introduces new objects (as "
                        "Cutie/XMem prompts); auto (default): incremental when every PNG after the first holds "
                        "only new ids")
    p.add_argument("--caption", default="", help="caption stored in the spec")
    p.set_defaults(func=from_masks_command)

    p = sub.add_parser(
        "from-maps", help="rendered trajectory maps (mp4 or PNG folder) -> spec",
        description="Read trajectory maps (rendered by `trajectory render` or the authors' release, "
                    "also after H.264) back into a spec: objects by palette colour, masks from "
                    "filled shapes, boxes from outlines; kind and palette are detected unless given.",
    )
    p.add_argument("maps", help="maps video (.mp4, ...) or folder of PNG frames")
    p.add_argument("--out", required=True, help="spec to write (.json)")
    p.add_argument("--kind", choices=KINDS, help="map kind (default: detected)")
    p.add_argument("--palette", choices=PALETTES, help="palette (default: detected)")
    p.add_argument("--caption", default="", help="caption stored in the spec")
    p.set_defaults(func=from_maps_command)

    p = sub.add_parser(
        "preview", help="draw a trajectory over the first frame (png contact sheet, gif, mp4)",
        description="Draw the trajectory over the first frame repeated on every frame (or over a "
                    "video's frames): .png/.jpg/.webp -> contact sheet, .gif -> animation, .mp4.",
    )
    p.add_argument("spec", help="trajectory spec (JSON), or maps (a video or a folder of frames)")
    media = p.add_mutually_exclusive_group(required=True)
    media.add_argument("--image", help="the first frame")
    media.add_argument("--video", help="a video (or folder of frames) to draw over instead")
    p.add_argument("--out", required=True, help="overlay.png, overlay.gif or overlay.mp4")
    p.add_argument("--kind", choices=KINDS, default=None, help="map kind (default: box; for maps, theirs)")
    p.add_argument("--size", type=parse_size, metavar="WxH",
                   help="preview size (default: the spec's); image and trajectory are resized to "
                        "cover it and centre-cropped the same way")
    p.add_argument("--alpha", type=_alpha, default=0.6, help="opacity of the maps (0.6)")
    p.add_argument("--fps", type=_positive_float, default=8.0, help="frame rate of gif/mp4 (8)")
    _palette_arguments(p)
    p.set_defaults(func=preview_command)

    from .motion_cli import register as register_motion

    register_motion(sub)  # from-video, from-points
