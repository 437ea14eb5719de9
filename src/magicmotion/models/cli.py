"""`magicmotion convert official CKPT.pt|RELEASE_DIR --out DIR`: import the released checkpoints."""

from __future__ import annotations


def register(sub) -> None:
    convert = sub.add_parser("convert", help="convert model checkpoints to safetensors folders")
    kinds = convert.add_subparsers(dest="convert_kind", metavar="KIND")
    official = kinds.add_parser(
        "official",
        help="import the released MagicMotion checkpoints (a release folder, or one .pt and its head)",
        description="Read released MagicMotion checkpoints with torch.load(weights_only=True), count their "
        "control blocks, map them onto CogVideoXTrajectoryControlNet and write safetensors folders loadable "
        "with from_pretrained. Given a release folder (ckpts/ with stage1/mask.pt, stage2/box.pt + "
        "box_perception_head.pt, stage3/sparse_box.pt + sparse_box_perception_head.pt), writes "
        "DIR/stageN/controlnet, DIR/stageN/segment_head and DIR/stageN/magicmotion.json (the release's "
        "recommended settings), all at once; given one .pt, writes DIR/controlnet (and DIR/segment_head "
        "with --head).",
    )
    official.add_argument("checkpoint", metavar="CKPT.pt|RELEASE_DIR",
                          help="a release folder (e.g. ckpts/) or one ControlNet checkpoint (e.g. stage2/box.pt)")
    official.add_argument("--out", required=True, metavar="DIR", help="output folder")
    official.add_argument("--head", metavar="HEAD.pt",
                          help="with one .pt: its perception head, e.g. stage2/box_perception_head.pt")
    official.add_argument(
        "--base-config", "--base", dest="base_config", metavar="BASE",
        help="the base transformer's config.json, its folder or the base model's folder; "
        "default: CogVideoX-5B-I2V values",
    )
    official.set_defaults(func=_official)

    def usage(args) -> int:
        convert.print_help()
        return 2

    convert.set_defaults(func=usage)


def _official(args) -> int:
    from pathlib import Path

    from ..errors import ModelError
    from .convert import convert_official_checkpoint, convert_official_release

    if Path(args.checkpoint).is_dir():
        if args.head:
            raise ModelError(f"{args.checkpoint}: --head goes with a single .pt, not a release folder")
        reports = convert_official_release(args.checkpoint, args.out, base_config=args.base_config,
                                           progress=lambda line: print(line, flush=True))
        for report in reports.values():
            print(report)
        print(f"wrote {args.out} (" + ", ".join(sorted({p.name for p in Path(args.out).iterdir()})) + ")")
        return 0
    report = convert_official_checkpoint(args.checkpoint, args.out, head_path=args.head, base_config=args.base_config)
    print(report)
    print(f"wrote {args.out}/controlnet" + (f" and {args.out}/segment_head" if args.head else "")
          + f", settings in {args.out}/magicmotion.json")
    return 0
