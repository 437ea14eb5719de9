"""`magicmotion convert official CKPT.pt --out DIR [--head HEAD.pt]`: import the released checkpoints."""

from __future__ import annotations


def register(sub) -> None:
    convert = sub.add_parser("convert", help="convert model checkpoints to safetensors folders")
    kinds = convert.add_subparsers(dest="convert_kind", metavar="KIND")
    official = kinds.add_parser(
        "official",
        help="import a released MagicMotion .pt (CogVideoX ControlNet, optional perception head)",
        description="Read a released MagicMotion checkpoint with torch.load(weights_only=True), count its "
        "control blocks, map it onto CogVideoXTrajectoryControlNet and write DIR/controlnet "
        "(and DIR/segment_head) as safetensors folders loadable with from_pretrained.",
    )
    official.add_argument("checkpoint", metavar="CKPT.pt", help="ControlNet checkpoint, e.g. stage2/box.pt")
    official.add_argument("--out", required=True, metavar="DIR", help="output folder")
    official.add_argument("--head", metavar="HEAD.pt", help="perception head, e.g. stage2/box_perception_head.pt")
    official.add_argument(
        "--base-config", metavar="CONFIG.json",
        help="the base transformer's config.json (or its folder); default: CogVideoX-5B-I2V values",
    )
    official.set_defaults(func=_official)

    def usage(args) -> int:
        convert.print_help()
        return 2

    convert.set_defaults(func=usage)


def _official(args) -> int:
    from .convert import convert_official_checkpoint

    report = convert_official_checkpoint(args.checkpoint, args.out, head_path=args.head, base_config=args.base_config)
    print(report)
    print(f"wrote {args.out}/controlnet" + (f" and {args.out}/segment_head" if args.head else ""))
    return 0
