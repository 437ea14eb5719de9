"""`magicmotion data curate INPUT --out DATASET ...`: a thin wrapper over `curate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...perception import BOX_THRESHOLD, DEFAULT_GROUNDING, DEFAULT_SAM2, TEXT_THRESHOLD
from .objects import DEFAULT_LLM


def _size(text: str) -> tuple[int, int]:
    from ..cli import parse_size

    return parse_size(text)


def add_curate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "curate", help="curate raw videos + captions into a trajectory-annotated dataset",
        description="Split videos at scene cuts into clips, find each clip's main moving objects "
                    "(a language model reads the caption, or they are given), ground them in the "
                    "first frame (Grounding DINO), segment and track them (SAM 2), and write the "
                    "clips with masks and boxes into DATASET. A manifest (DATASET/manifest.sqlite) "
                    "records every clip: re-running the same command resumes.")
    p.add_argument("input", type=Path,
                   help="a folder of videos (captions in <video>.txt or <video>.json), or a CSV / "
                        "JSONL with video, caption[, objects] columns")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created or resumed)")
    p.add_argument("--objects-from", choices=("caption", "given"), default="caption",
                   help="objects from the caption by a language model (default) or from the "
                        "input's 'objects' column")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run here (default) or on Ray Data (needs ray[data])")
    p.add_argument("--llm", default=DEFAULT_LLM, help=f"language model id or folder (default {DEFAULT_LLM})")
    p.add_argument("--grounding", default=DEFAULT_GROUNDING,
                   help=f"Grounding DINO id or folder (default {DEFAULT_GROUNDING})")
    p.add_argument("--sam2", default=DEFAULT_SAM2, help=f"SAM 2 video id or folder (default {DEFAULT_SAM2})")
    p.add_argument("--clip-frames", type=int, default=49, help="frames per clip (default 49)")
    p.add_argument("--frame-step", type=int, default=1,
                   help="keep every N-th source frame (default 1)")
    p.add_argument("--size", type=_size, default=None,
                   help="resize + centre-crop clips to WxH (default: the source size)")
    p.add_argument("--scene-threshold", type=float, default=27.0,
                   help="PySceneDetect ContentDetector threshold (default 27)")
    p.add_argument("--max-clips-per-scene", type=int, default=None,
                   help="at most N clips from one scene (default: all that fit)")
    p.add_argument("--box-threshold", type=float, default=BOX_THRESHOLD,
                   help=f"Grounding DINO box threshold (default {BOX_THRESHOLD})")
    p.add_argument("--text-threshold", type=float, default=TEXT_THRESHOLD,
                   help=f"Grounding DINO text threshold (default {TEXT_THRESHOLD})")
    p.add_argument("--max-objects", type=int, default=5, help="objects per clip at most (default 5)")
    p.add_argument("--llm-retries", type=int, default=2,
                   help="new tries after a malformed language-model answer (default 2)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="clips per language-model / grounding batch (default 8)")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="share of clips put in the 'test' split, by a hash of the id (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    p.add_argument("--retry-failed", action="store_true",
                   help="try clips and videos that failed in an earlier run again")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster address (default: a running cluster or a new local one)")
    p.add_argument("--actors", type=int, default=1,
                   help="Ray actors per model stage (default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=None,
                   help="GPUs per Ray model actor (default 1 if the cluster has GPUs, else 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_curate)
    return p


def _curate(args) -> int:
    from .runners import curate
    from .stages import CurationConfig

    cfg = CurationConfig(
        objects_from=args.objects_from, llm=args.llm, grounding=args.grounding, sam2=args.sam2,
        device=args.device, clip_frames=args.clip_frames, frame_step=args.frame_step,
        scene_threshold=args.scene_threshold, max_clips_per_scene=args.max_clips_per_scene,
        size=args.size, box_threshold=args.box_threshold, text_threshold=args.text_threshold,
        max_objects=args.max_objects, llm_retries=args.llm_retries, batch_size=args.batch_size,
        test_fraction=args.test_fraction, engine=args.engine, ray_address=args.ray_address,
        actors=args.actors, gpus_per_actor=args.gpus_per_actor, retry_failed=args.retry_failed)
    import shutil

    from ...errors import MagicMotionError
    from ...locks import output_lock

    if args.engine == "ray":
        from ..magicdata import require_ray

        require_ray()  # before the output folder is made
    from ...errors import DatasetError
    from ...paths import check_output

    check_output(args.out, [args.input], error=DatasetError, folder=True, make_parents=True, dataset=True)
    with output_lock(args.out, "dataset"):  # one run per output
        fresh = not Path(args.out).exists()
        try:
            summary = curate(args.input, args.out, cfg, progress=not args.quiet)
        except MagicMotionError:  # e.g. a model refused on first use: a new folder with no clip goes
            videos = Path(args.out) / "videos"
            if fresh and Path(args.out).is_dir() and not (videos.is_dir() and any(videos.iterdir())):
                shutil.rmtree(args.out)
            raise
    print(summary.format())
    return 0
