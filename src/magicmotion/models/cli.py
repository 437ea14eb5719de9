"""`magicmotion convert official CKPT.pt|RELEASE_DIR --out DIR`: import the released checkpoints;
`magicmotion convert wan-fun SRC --out DIR`: Wan2.1-Fun-1.3B-InP to a diffusers pipeline folder."""

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

    wan_fun = kinds.add_parser(
        "wan-fun",
        help="convert alibaba-pai/Wan2.1-Fun-1.3B-InP (Wan's own layout) to a diffusers WanImageToVideoPipeline folder",
        description="Map the transformer (config.json + diffusion_pytorch_model.safetensors), the VAE "
        "(Wan2.1_VAE.pth), the umt5-xxl text encoder (models_t5_umt5-xxl-enc-bf16.pth), the tokenizer "
        "(google/umt5-xxl/) and the CLIP image encoder's vision tower "
        "(models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth -> CLIPVisionModel + CLIPImageProcessor) "
        "of a VideoX-Fun release folder onto diffusers/transformers classes, every key checked, and write a "
        "WanImageToVideoPipeline folder.",
    )
    wan_fun.add_argument("src", metavar="SRC", help="the release folder, e.g. Wan2.1-Fun-1.3B-InP/")
    wan_fun.add_argument("--out", required=True, metavar="DIR", help="output pipeline folder (new or empty)")
    wan_fun.add_argument("--image-encoder", metavar="DIR",
                         help="use this transformers CLIPVisionModel folder (image_processor/ inside or beside "
                         "it) instead of converting the release's CLIP file")
    wan_fun.add_argument("--flow-shift", type=float, default=3.0, help="scheduler flow shift (3.0 for 480P)")
    wan_fun.set_defaults(func=_wan_fun)

    def usage(args) -> int:
        convert.print_help()
        return 2

    convert.set_defaults(func=usage)


def _wan_fun(args) -> int:
    from ..errors import ModelError
    from ..paths import check_output
    from .convert_wan_fun import convert_wan_fun

    check_output(args.out, [args.src, args.image_encoder], error=ModelError, folder=True, make_parents=True)
    out = convert_wan_fun(args.src, args.out, image_encoder=args.image_encoder, flow_shift=args.flow_shift,
                          progress=lambda line: print(line, flush=True))
    print(f"wrote {out}")
    return 0


def _official(args) -> int:
    from pathlib import Path

    from ..errors import ModelError
    from ..paths import check_output
    from .convert import convert_official_checkpoint, convert_official_release

    check_output(args.out, [args.checkpoint, args.head, args.base_config], error=ModelError, folder=True,
                 make_parents=True)
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
