"""`magicmotion demo` (what `make demo` runs): the shipped tiny model on the bundled example.

For each trajectory kind (mask, box, sparse_box) it generates a video from `examples/first_frame.png`
and that kind's spec, writes the video and previews, and measures how well the generated objects
follow the trajectory: the classic tracker (magicmotion.bench) segments each object in the generated
video, seeded by the frame-0 mask, and the Mask/Box IoU against the dense reference is printed. Where the
example has its true clip (`source.mp4`), how much the video looks like it is printed too: frame-0 PSNR,
late-frame background PSNR and object colour error (`bench.metrics.appearance_scores`). One picture,
`demo.png`, shows every kind together: per row the first frame, the trajectory over it and generated
frames, under a first row of the true clip.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import MagicMotionError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PACKAGED_EXAMPLES = Path(__file__).resolve().parent / "assets" / "examples"
SPEC_FILES = {"mask": "trajectory-mask.json", "box": "trajectory-box.json",
              "sparse_box": "trajectory-sparse.json"}


def examples_dir() -> Path:
    """The bundled example: the repo's examples/ folder, or the copy shipped in the package."""
    for d in (EXAMPLES, PACKAGED_EXAMPLES):
        if (d / "first_frame.png").is_file():
            return d
    raise MagicMotionError(f"{EXAMPLES}: the bundled example (first_frame.png) is missing")


def follow_scores(frames, reference) -> dict:
    """Mask and Box IoU of generated `frames` against a dense `reference` trajectory (classic tracker
    seeded with the reference's frame-0 masks; frame 0 is not scored)."""
    from .bench.metrics import clip_scores
    from .perception import ClassicTracker

    first = {o.id: o.mask(0) for o in reference.objects}
    pred = ClassicTracker().track(frames, first)
    return clip_scores(pred, reference)


def run_demo(out: str | Path = "outputs/demo", kinds=("mask", "box", "sparse_box"), steps: int | None = None,
             seed: int = 0, device: str | None = None) -> dict:
    """Steps, guidance and fps: the shipped tiny model's recommended settings (its magicmotion.json)
    unless `steps` is given; steps, seed and device are checked before the output folder is made."""
    from .logfilters import quiet_loading

    quiet_loading()  # one progress bar per video: its denoising steps (--verbose: every library bar)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MagicMotionError(f"{out}: is a file, expected a folder for the demo's videos")
    from .limits import check_int, check_seed
    from .paths import check_output
    from .pipelines.loading import resolve_device

    if steps is not None:  # checked before the output folder is made (generate's bounds)
        check_int(steps, "--steps", lo=1, hi=1000)
    check_seed(seed, "--seed")
    device = resolve_device(device)
    check_output(out, folder=True, make_parents=True)
    fresh = not out.exists()
    try:
        return _run_demo(out, kinds, steps, seed, device)
    except BaseException:
        if fresh and out.is_dir() and not any(out.iterdir()):  # a refusal leaves no empty output folder
            out.rmdir()
        raise


def true_clip(ex: Path, reference):
    """The example's true clip (source.mp4) as uint8 (T, H, W, 3) when it has one at the reference's
    frames and size, else None."""
    from .io import read_video

    path = ex / "source.mp4"
    if not path.is_file():
        return None
    frames = read_video(path)[0]
    if frames.shape[:3] != (reference.num_frames, reference.height, reference.width):
        return None
    return frames


def _run_demo(out: Path, kinds, steps, seed, device) -> dict:
    from . import trajectory
    from .bench.metrics import appearance_scores
    from .io import read_image
    from .pipelines import generate, load_pipeline, write_outputs
    from .sheet import SheetRow, write_results_sheet

    out.mkdir(parents=True, exist_ok=True)
    ex = examples_dir()
    image = read_image(ex / "first_frame.png")
    prompt = (ex / "prompt.txt").read_text().strip()
    reference = trajectory.load(ex / SPEC_FILES["mask"])
    results, rows = {}, []
    real = true_clip(ex, reference)
    if real is not None:
        rows.append(SheetRow("the true clip (source.mp4)", image, trajectory.render(reference, "mask"), real))
    for kind in kinds:
        t0 = time.time()
        spec = trajectory.load(ex / SPEC_FILES[kind])
        pipe = load_pipeline(base=None, kind=kind, device=device)
        settings = pipe.model_settings.with_arguments(num_inference_steps=steps)
        frames, maps = generate(pipe, image, prompt, spec, kind=kind, seed=seed,
                                num_inference_steps=settings["num_inference_steps"],
                                guidance_scale=settings["guidance_scale"])
        record = dict(kind=kind, prompt=prompt, image=str(ex / "first_frame.png"),
                      trajectory=str(ex / SPEC_FILES[kind]), steps=settings["num_inference_steps"],
                      guidance=settings["guidance_scale"], seed=seed, model="shipped tiny model",
                      model_settings=settings.record())
        paths = write_outputs(out / f"{kind}.mp4", frames, maps, record, fps=settings["fps"])
        scores = follow_scores(frames, reference)
        looks = appearance_scores(frames, real, reference) if real is not None and frames.shape == real.shape else {}
        label = f"{kind} (Box IoU {_pct(scores['box_iou'])}"
        rows.append(SheetRow(label + (f", background {_number(looks['background_psnr'], ' dB')})" if looks else ")"),
                             image, maps, frames))
        results[kind] = dict(video=str(paths["video"]), preview=str(paths["preview_gif"]),
                             mask_iou=scores["mask_iou"], box_iou=scores["box_iou"], **looks,
                             seconds=round(time.time() - t0, 2))
        looks_text = "".join(f"  {name} {_number(looks.get(key), unit)}" for key, name, unit in LOOKS if looks)
        print(f"{kind:>10}: {paths['video']}  (preview {paths['preview_gif'].name}, "
              f"{paths['preview_png'].name})  Mask IoU {_pct(scores['mask_iou'])}  "
              f"Box IoU {_pct(scores['box_iou'])}{looks_text}  [{results[kind]['seconds']} s]")
    (out / "demo.json").write_text(json.dumps(results, indent=2) + "\n")
    sheet = write_results_sheet(out / "demo.png", rows)
    print(f"look at {sheet}: per kind, the first frame, its trajectory and the generated frames"
          + (", under the true clip" if real is not None else ""))
    print(f"all outputs in {out}/ (demo.json has the numbers)")
    return results


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


# How much a generated video looks like the true clip: (key, printed name, unit)
LOOKS = [("frame0_psnr", "frame 0", " dB"), ("background_psnr", "background", " dB"),
         ("colour_error", "colour error", "")]


def _number(v, unit: str) -> str:
    return "n/a" if v is None else f"{v:.1f}{unit}"


def register(sub) -> None:
    p = sub.add_parser("demo", help="generate from the bundled example with the shipped tiny model",
                       description=__doc__)
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--kind", action="append", choices=list(SPEC_FILES), help="only these kinds")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the tiny model's recommended, 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.set_defaults(func=lambda a: run_demo(a.out, tuple(a.kind or SPEC_FILES), a.steps, a.seed,
                                           a.device) and 0)
