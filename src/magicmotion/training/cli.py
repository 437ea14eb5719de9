"""`magicmotion train --config C.yaml [--resume] [--set key=value ...]` and
`magicmotion train precompute --config C.yaml --out DIR [--kinds mask,box,sparse_box]`."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a stage of MagicMotion (Trajectory ControlNet + segment head) from a YAML config",
        description="Train one stage from a YAML config (see configs/ and docs/training.md). Multi-GPU: "
        "accelerate launch --config_file configs/accelerate/ddp.yaml -m magicmotion.cli train --config ...",
    )
    train.add_argument("--config", metavar="YAML", help="training config, e.g. configs/wan-1.3b/stage1.yaml")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in output_dir (start fresh if there is none)")
    train.add_argument("--overwrite", action="store_true",
                       help="start over in an output_dir that holds an earlier run (its checkpoints, final/, "
                       "log.csv are removed)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (dotted key or unique leaf name, e.g. --set optim.lr=1e-4 "
                       "--set max_steps=10); repeatable")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    actions = train.add_subparsers(dest="train_action", metavar="ACTION")
    pre = actions.add_parser(
        "precompute",
        help="encode a config's clips (VAE latents, trajectory latents, text embeddings) to disk once",
        description="Encode the video, trajectory maps (all three kinds unless --kinds says otherwise), the "
        "first-frame condition and the caption of every clip with the base's frozen encoders, one "
        "safetensors file per clip plus index.json. Train on it with --set data.precomputed=DIR.",
    )
    pre.add_argument("--config", required=True, metavar="YAML")
    pre.add_argument("--out", metavar="DIR",
                     help="output folder (default: the config's data.precomputed); re-runs skip finished clips")
    pre.add_argument("--kinds", default=None, metavar="K1,K2",
                     help="trajectory kinds to store (default: mask,box,sparse_box, so one folder serves "
                     "all three stages); mask and the config's kind are always stored")
    pre.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    pre.add_argument("--batch-size", type=int, default=4, help="videos per VAE call")
    pre.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pre.add_argument("--no-progress", action="store_true")
    pre.set_defaults(func=_precompute)


def _train(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .config import load_config

    if not args.config:
        raise ConfigError("train needs --config YAML (e.g. configs/wan-1.3b/stage1.yaml)")
    config = load_config(args.config, args.overrides)
    check_clips(config)
    if args.no_progress:
        quiet_loading()
    from ..locks import output_lock
    from .trainer import train

    with output_lock(config.output_dir, "output_dir"):  # one run per output
        result = train(config, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    print(f"trained {result.step} steps; weights in {result.final_dir}")
    return 0


def _precompute(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .config import CONDITIONS, load_config

    kinds = None if args.kinds is None else [k for k in args.kinds.split(",") if k]
    bad = [k for k in kinds or () if k not in CONDITIONS]
    if bad:
        raise ConfigError(f"--kinds: unknown kind {bad[0]!r} (one of {', '.join(CONDITIONS)})")
    if not 1 <= args.batch_size <= 4096:
        raise ConfigError(f"--batch-size must be in 1..4096, got {args.batch_size}")
    config = load_config(args.config, args.overrides)
    out = args.out or config.data.precomputed
    if not out:
        raise ConfigError(f"{args.config}: no --out and no data.precomputed to write to")
    check_clips(config, raw=True)
    if args.no_progress:
        quiet_loading()
    from ..locks import output_lock
    from .precompute import precompute

    with output_lock(out, "--out"):  # one run per output
        out = precompute(config, out, kinds=kinds, dtype=args.dtype, batch_size=args.batch_size,
                         progress=not args.no_progress)
    print(f"wrote {out}/index.json")
    return 0


def check_clips(config, raw: bool = False) -> None:
    """The raw clips a run reads are all there (DatasetError naming the first missing video), checked
    before any model loads; training on precomputed latents (and not `raw`) reads no video."""
    from ..data.reader import Dataset

    d = config.data
    if raw or not d.precomputed:
        Dataset(d.dataset, split=d.split).check_videos_present()


def quiet_loading() -> None:
    """--no-progress: no "Loading weights" bars from transformers and diffusers either, so a log (or
    an error) is just the command's own lines."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
