"""`magicmotion app`: the drawing app in the browser."""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser(
        "app",
        help="draw a trajectory on a first frame and generate, in the browser",
        description="Start the drawing app (Gradio). It binds to 127.0.0.1 (this machine only) unless "
                    "--host says otherwise, and prints the address to open.",
    )
    p.add_argument("--base", default=None,
                   help="base model: a diffusers folder or hub id (default: the shipped tiny model)")
    p.add_argument("--controlnet", default=None,
                   help="trained ControlNet folder or released .pt checkpoint (default: the base's own)")
    p.add_argument("--sam2", default=None,
                   help="SAM 2 model folder (transformers Sam2Model) for point clicks; without it, boxes only")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--out", default=None, help="folder for the results (default: a temporary folder)")
    from ..pipelines.cli import add_memory_arguments

    add_memory_arguments(p)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default cuda when available)")
    p.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default bf16 on CUDA, fp32 on CPU)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import MagicMotionError
    from ..pipelines.cli import memory_options

    load_options = dict(memory_options(args), device=args.device, dtype=args.dtype)  # checked before the app starts
    if args.lora:
        load_options["lora_scale"] = args.lora_scale
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise MagicMotionError("the app needs gradio: pip install 'magicmotion[app]'") from None
    if not 0 <= args.port <= 65535:
        raise MagicMotionError(f"--port must be in 0..65535, got {args.port}")
    from ..logfilters import quiet_loading
    from ..paths import check_output
    from .ui import build_app, launch

    quiet_loading()
    if args.out is not None:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise MagicMotionError(f"{args.out}: is a file, expected a folder for the app's results")
        check_output(args.out, folder=True, make_parents=True)

    demo = build_app(base=args.base, controlnet=args.controlnet, sam2=args.sam2, output_dir=args.out,
                     load_options=load_options)
    try:
        url = launch(demo, host=args.host, port=args.port, prevent_thread_lock=True, quiet=True)
    except OSError as e:
        raise MagicMotionError(f"cannot start the app on {args.host}:{args.port} ({e})") from None
    print(f"MagicMotion app running at {url}  (Ctrl+C stops it)", flush=True)
    if args.base is None:  # the same one line `generate` prints: what the tiny model can and cannot do
        from ..pipelines.cli import TINY_MODEL_NOTE

        print(TINY_MODEL_NOTE, flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return 0
