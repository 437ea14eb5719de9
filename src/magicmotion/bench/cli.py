"""`magicmotion bench ...`: build benchmark sets, run a model on them, score runs and report
(docs/benchmark.md). Heavy imports stay inside the command functions."""

from __future__ import annotations

import argparse
import contextlib
import shutil
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    """"64x48" -> (64, 48) = (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 720x480, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _buckets(text: str) -> list[str]:
    return [b.strip() for b in text.split(",") if b.strip()]


def register(sub) -> None:
    from ..pipelines.cli import add_memory_arguments, add_parallel_arguments, add_speed_arguments

    p = sub.add_parser("bench", help="benchmark: build sets, run, score (FID, FVD, Mask/Box IoU), report",
                       description="MagicBench-style and DAVIS evaluation: build a benchmark set, "
                                   "generate a video per clip, score the run, report runs side by side.")
    bs = p.add_subparsers(dest="bench_command", metavar="STEP")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    b = bs.add_parser("build", help="a MagicBench-style set from a dataset (clips bucketed by objects)",
                      description="Pick up to N clips per number of controlled objects (1..5, 6+) from a "
                                  "dataset in our layout, cut to their first T frames, into a benchmark "
                                  "folder (the same layout, with a 'bucket' per clip). Re-run to resume.")
    b.add_argument("dataset", type=Path, help="dataset folder (index.jsonl, videos/, annotations/)")
    b.add_argument("--out", required=True, type=Path, help="benchmark folder to write")
    b.add_argument("--per-bucket", type=int, default=100, help="clips per bucket (default 100)")
    b.add_argument("--frames", type=int, default=49, help="frames per clip (default 49)")
    b.add_argument("--buckets", type=_buckets, default=["1", "2", "3", "4", "5", "6+"],
                   help="object-count buckets (default 1,2,3,4,5,6+)")
    b.add_argument("--seed", type=int, default=0, help="shuffle seed for picking clips (default 0)")
    b.add_argument("--split", default=None, help="only clips of this split (e.g. test)")
    b.add_argument("--size", type=_size, default=None, help="resize + centre-crop to WxH")
    b.set_defaults(func=_build)

    m = bs.add_parser("import-magicbench", help="the released MagicBench (quanhaol/MagicBench) as a set",
                      description="Check that ROOT is in MagicData's layout (MagicBench.csv or "
                                  "MagicData.csv, videos/, masks/, boxs/; refused with what was found "
                                  "otherwise), decode its maps with the MagicData importer into a dataset, "
                                  "and build the benchmark from every clip in its published bucket.")
    m.add_argument("root", type=Path, help="the MagicBench folder (huggingface-cli download ...)")
    m.add_argument("--out", required=True, type=Path, help="benchmark folder to write")
    m.add_argument("--dataset", type=Path, default=None,
                   help="where the decoded clips go (default: OUT-dataset next to OUT)")
    m.add_argument("--frames", type=int, default=49, help="frames per clip (default 49, the paper's)")
    m.add_argument("--size", type=_size, default=None, help="resize + centre-crop to WxH")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=_import_magicbench)

    d = bs.add_parser("davis", help="a benchmark set from a DAVIS 2017 folder",
                      description="Read JPEGImages/RES/SEQ/*.jpg and Annotations/RES/SEQ/*.png (palette "
                                  "PNGs, value = object id) into a benchmark folder; the controlled "
                                  "objects are those annotated on frame 0.")
    d.add_argument("davis", type=Path, help="DAVIS root (JPEGImages/, Annotations/)")
    d.add_argument("--out", required=True, type=Path, help="benchmark folder to write")
    d.add_argument("--resolution", default="480p", help="resolution folder (default 480p)")
    d.add_argument("--frames", type=int, default=None, help="first N frames of each sequence (default all)")
    d.add_argument("--captions", type=Path, default=None,
                   help="captions: JSON {sequence: caption} or lines 'sequence<TAB>caption' "
                        "(default: the sequence name)")
    d.add_argument("--imageset", default=None,
                   help="only these sequences: val, train (ImageSets/2017/NAME.txt) or a list file")
    d.add_argument("--fps", type=float, default=24.0, help="frame rate of the clips (default 24)")
    d.set_defaults(func=_davis)

    r = bs.add_parser("run", help="generate a video for every clip of a benchmark set (resumable)",
                      description="Generate from each clip's first frame, caption and trajectory into "
                                  "RUN/videos/<id>.mp4. Clips already done are skipped. --ground-truth "
                                  "copies the clips themselves (the segmenter's ceiling); "
                                  "--control-scale 0 runs without the trajectory (the floor).")
    r.add_argument("bench", type=Path, help="benchmark folder")
    r.add_argument("--out", required=True, type=Path, help="run folder")
    r.add_argument("--base", metavar="PATH_OR_ID", default=None,
                   help="base model folder or hub id (default: the shipped tiny model)")
    r.add_argument("--controlnet", metavar="PATH", default=None,
                   help="Trajectory ControlNet folder or released .pt (default with no --base: the tiny "
                        "model's stage for --kind)")
    r.add_argument("--kind", default="box", choices=["mask", "box", "sparse_box"],
                   help="trajectory kind (default box)")
    r.add_argument("--control-scale", type=float, default=1.0, help="ControlNet scale (default 1; 0 = floor)")
    r.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the model's recommended, e.g. 50; 25 for the shipped tiny model)")
    r.add_argument("--guidance", type=float, default=None,
                   help="guidance scale (default: the model's recommended, e.g. 6; 1 for the shipped tiny model)")
    r.add_argument("--trajectory-guidance", type=float, default=1.0, metavar="W",
                   help="trajectory guidance scale (default 1 = off; see magicmotion generate)")
    add_speed_arguments(r)
    r.add_argument("--seed", type=int, default=0, help="seed, the same for every clip (default 0)")
    r.add_argument("--limit", type=int, default=None, help="only the first N clips")
    r.add_argument("--size", type=_size, default=None, help="output size WxH (default: the pipeline's)")
    r.add_argument("--sparse-keys", type=int, default=4,
                   help="key frames besides frame 0 for --kind sparse_box (default 4)")
    r.add_argument("--ground-truth", action="store_true",
                   help="use the benchmark's own videos (the ceiling of the trajectory metrics)")
    r.add_argument("--label", default=None, help="name of the run in reports (default: the folder name)")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default cuda when available)")
    r.add_argument("--dtype", default=None, help="bf16, fp16, fp32 (default bf16 on CUDA)")
    add_memory_arguments(r)
    add_parallel_arguments(r)
    r.set_defaults(func=_run)

    s = bs.add_parser("score", help="score a run: Mask IoU, Box IoU, FID, FVD by bucket -> RUN/scores.json",
                      description="Segment the controlled objects in every generated video (prompted by "
                                  "the frame-0 masks) and compare with the trajectory; FID and FVD "
                                  "against the benchmark's videos when their weights are available.")
    s.add_argument("run", type=Path, help="run folder")
    s.add_argument("--segmenter", default="classic", choices=["classic", "sam2"],
                   help="classic (no weights, weaker) or sam2 (default classic)")
    s.add_argument("--sam2", default=None, metavar="PATH_OR_ID",
                   help="SAM 2 video weights: a folder or hub id (default facebook/sam2.1-hiera-tiny)")
    s.add_argument("--inception", default=None, metavar="PATH",
                   help="Inception weights for FID (torch-fidelity's pt_inception-2015-12-05-6726825d.pth; "
                        "default: fetched by torch-fidelity)")
    s.add_argument("--i3d", default=None, metavar="PATH",
                   help="I3D TorchScript detector for FVD (StyleGAN-V's i3d_torchscript.pt)")
    s.add_argument("--device", default="cpu", help="device for the networks (default cpu)")
    s.add_argument("--fvd-frames", type=int, default=16, help="frames per clip for FVD (default 16)")
    s.add_argument("--fid-stride", type=int, default=1, help="every n-th frame for FID (default 1)")
    s.set_defaults(func=_score)

    t = bs.add_parser("report", help="Markdown table (paper's Table 1), chart by objects (Figure 4), JSON",
                      description="Put scored runs side by side: OUT/report.md, OUT/by_objects.png, "
                                  "OUT/report.json.")
    t.add_argument("runs", nargs="+", type=Path, help="scored run folders")
    t.add_argument("--out", required=True, type=Path, help="report folder")
    t.add_argument("--labels", default=None, help="comma-separated row names (default: the runs' labels)")
    t.set_defaults(func=_report)


def _build(args) -> int:
    from ..errors import BenchError
    from ..paths import check_output
    from .sets import build_bench, skipped_text

    check_output(args.out, [args.dataset], error=BenchError, folder=True, make_parents=True, dataset=True)
    s = build_bench(args.dataset, args.out, per_bucket=args.per_bucket, num_frames=args.frames,
                    buckets=args.buckets, seed=args.seed, split=args.split, size=args.size)
    print(f"{args.out}: {s['clips']} clips; by bucket {s['buckets']}")
    if any(s["skipped"].values()):
        print(f"{args.out}: skipped {skipped_text(s['skipped'], s['skipped_clips'], args.frames)}")
    if s["short_buckets"]:
        print(f"{args.out}: fewer than {args.per_bucket} clips in bucket(s) {', '.join(s['short_buckets'])}")
    return 0


def _import_magicbench(args) -> int:
    from .magicbench import import_magicbench
    from .sets import skipped_text

    s = import_magicbench(args.root, args.out, dataset=args.dataset, num_frames=args.frames,
                          size=args.size, progress=not args.quiet)
    src = s["source"]
    print(f"{args.out}: {s['clips']} clips of MagicBench ({src['imported']} decoded into {src['dataset']}); "
          f"by bucket {s['buckets']}" + (f" (published in column {src['count_column']!r})"
                                         if src["count_column"] else " (objects on frame 0)"))
    if src["skipped_clips"]:
        print(f"{args.out}: {len(src['skipped_clips'])} clip(s) not decoded, e.g. "
              f"{src['skipped_clips'][0]['id']} [{src['skipped_clips'][0]['reason']}]: "
              f"{src['skipped_clips'][0]['detail']} (see {src['dataset']}/import.json)")
    if any(s["skipped"].values()):
        print(f"{args.out}: skipped {skipped_text(s['skipped'], s['skipped_clips'], args.frames)}")
    if s.get("bucket_mismatch"):
        m = s["bucket_mismatch"][0]
        print(f"{args.out}: {len(s['bucket_mismatch'])} clip(s) decode to another number of objects on "
              f"frame 0 than published (e.g. {m['id']}: {m['published']} published, {m['decoded']} decoded)")
    return 0


def _davis(args) -> int:
    from ..errors import BenchError
    from ..paths import check_output
    from .sets import read_davis

    check_output(args.out, [args.davis, args.captions], error=BenchError, folder=True, make_parents=True,
                 dataset=True)
    s = read_davis(args.davis, args.out, resolution=args.resolution, num_frames=args.frames,
                   captions=args.captions, imageset=args.imageset, fps=args.fps)
    print(f"{args.out}: {s['clips']} clips; by bucket {s['buckets']}; skipped {s['skipped']}")
    return 0


@contextlib.contextmanager
def _removed_if_refused(out: Path, fresh: bool):
    """A new run folder that a refusal leaves without a single finished clip is removed (no partial
    output); one that holds clips, or was there before, stays for the run to resume."""
    try:
        yield
    except BaseException:
        if fresh and out.is_dir() and not any((out / "videos").glob("*.mp4")):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(args) -> int:
    from ..errors import BenchError
    from ..limits import MAX_FRAMES, check_int
    from ..locks import output_lock

    check_int(args.sparse_keys, "--sparse-keys", lo=1, hi=MAX_FRAMES, error=BenchError)  # whatever the kind
    from ..pipelines.batch import process_device, process_split, wait_for_everyone
    from ..pipelines.cli import memory_options, speed_options
    from .runner import run_bench

    from ..paths import check_output

    check_output(args.out, [args.bench], error=BenchError, folder=True, make_parents=True)
    memory = memory_options(args)
    offload = memory.pop("offload")
    split = getattr(args, "context_parallel", None)
    if split is not None:  # every process makes every clip together; refused options fail before loading
        from ..pipelines.cli import check_parallel_args

        check_parallel_args(args, args.size, None)
        index, count = 0, 1
    else:
        index, count = process_split()  # under `accelerate launch` / torchrun: this process's share of the clips
    if memory["lora"]:
        memory["lora_scale"] = args.lora_scale
    fresh = not Path(args.out).exists() and count == 1 and split is None
    with output_lock(args.out, "run folder"), _removed_if_refused(Path(args.out), fresh):  # one run per output
        s = run_bench(args.bench, args.out, base=args.base, controlnet=args.controlnet, kind=args.kind,
                      control_scale=args.control_scale, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, trajectory_guidance=args.trajectory_guidance, seed=args.seed,
                      limit=args.limit, ground_truth=args.ground_truth, size=args.size,
                      sparse_keys=args.sparse_keys, device=process_device() or args.device, dtype=args.dtype,
                      offload=offload, label=args.label, speed=speed_options(args), memory=memory,
                      process_index=index, num_processes=count, wait_for_others=wait_for_everyone,
                      context_parallel=split)
    if split is not None:
        from ..pipelines.parallel import launch_world

        if launch_world()[0] != 0:  # rank 0 reports
            return 0
    share = f" (process {index + 1} of {count})" if count > 1 else ""
    print(f"{args.out}: {s['clips']} clips{share} ({s['generated']} generated now, {s['skipped']} already done)")
    return 0


def _score(args) -> int:
    import sys

    from .score import score_run

    s = score_run(args.run, segmenter=args.segmenter, sam2=args.sam2, inception=args.inception,
                  i3d=args.i3d, device=args.device, fvd_frames=args.fvd_frames, fid_stride=args.fid_stride)
    for note in s["notes"]:
        print(f"magicmotion: note: {note}", file=sys.stderr)

    def fmt(v, percent=False):
        return "-" if v is None else (f"{100 * v:.2f}%" if percent else f"{v:.2f}")

    print(f"{'objects':>8} {'clips':>5} {'FID':>8} {'FVD':>8} {'Mask IoU':>9} {'Box IoU':>9} "
          f"{'frame 0 dB':>10} {'late bg dB':>10} {'colour err':>10}")
    for name, row in [*s["buckets"].items(), ("all", s["overall"])]:
        print(f"{name:>8} {row['clips']:>5} {fmt(row['fid']):>8} {fmt(row['fvd']):>8} "
              f"{fmt(row['mask_iou'], True):>9} {fmt(row['box_iou'], True):>9} {fmt(row['frame0_psnr']):>10} "
              f"{fmt(row['background_psnr']):>10} {fmt(row['colour_error']):>10}")
    print(f"{args.run / 'scores.json'}: written")
    return 0


def _report(args) -> int:
    from ..errors import BenchError
    from ..paths import check_output
    from .report import report

    # what is read of each run: its scores (a report beside them in the run folder is fine)
    check_output(args.out, [Path(r) / "scores.json" for r in args.runs], error=BenchError, folder=True,
                 make_parents=True)
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    report(args.runs, args.out, labels=labels)
    print(f"{args.out}: report.md, by_objects.png, report.json")
    return 0
