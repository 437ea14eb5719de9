"""`magicmotion data ...`: datasets in the shared layout (docs/dataset-format.md).

Each subcommand is one `_add_<name>(sub)` function listed in SUBCOMMANDS; a part that adds a
subcommand (curate, filter) adds its function there. Heavy imports stay inside the command functions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_size(text: str) -> tuple[int, int]:
    """"64x48" -> (64, 48) = (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must be WIDTHxHEIGHT, e.g. 64x64, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


# ------------------------------------------------------------------------------------------ synth


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth", help="write a dataset of synthetic videos of moving objects",
        description="Write N synthetic clips (textured background, 1..5 moving, occluding objects, "
                    "exact masks and boxes, captions). Clip k depends only on (seed, k); clips "
                    "already in the dataset are skipped, so a re-run completes a crashed one.")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created if missing)")
    p.add_argument("--clips", type=int, default=100, help="number of clips (default 100)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip (default 17)")
    p.add_argument("--size", type=parse_size, default=(64, 64), help="WxH (default 64x64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of clips in the 'test' split, fixed per clip by a hash (default 0.1)")
    p.add_argument("--max-objects", type=int, default=5, help="objects per clip: 1..N (default 5)")
    p.add_argument("--pan-prob", type=float, default=0.3,
                   help="share of clips with a slow camera pan (default 0.3)")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the videos (default 8)")
    p.set_defaults(func=_synth)


def _synth(args) -> int:
    from ..errors import DatasetError
    from ..paths import check_output
    from .synthetic import synthesize

    check_output(args.out, error=DatasetError, folder=True, make_parents=True, dataset=True)

    written = synthesize(args.out, args.clips, frames=args.frames, size=args.size, seed=args.seed,
                         test_fraction=args.test_fraction, fps=args.fps, max_objects=args.max_objects,
                         pan_prob=args.pan_prob)
    print(f"{args.out}: wrote {len(written)} clips ({args.clips - len(written)} already there)")
    return 0


# ------------------------------------------------------------------------------------------- info


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info", help="count clips, objects, frames and sizes of a dataset",
        description="Summarise a dataset from its index (checking that every video and annotation "
                    "exists) and write a histogram of objects per clip as a PNG.")
    p.add_argument("dataset", type=Path, help="dataset folder")
    p.add_argument("--plot", type=Path, default=None,
                   help="histogram PNG (default DATASET/info.png)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verify", action="store_true",
                   help="also decode every frame of every clip's video (slow)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="summarise the index only: open no video or annotation (by default every video's "
                        "header and every annotation are checked against the index)")
    p.set_defaults(func=_info)


def _info(args) -> int:
    from ..errors import DatasetError
    from ..paths import check_output
    from .dataset import INDEX
    from .info import dataset_info, write_info_plot

    plot = args.plot or args.dataset / "info.png"
    check_output(plot, [args.dataset / INDEX, args.dataset / "videos", args.dataset / "annotations"],
                 what="--plot", error=DatasetError, in_dataset=True)
    info = dataset_info(args.dataset)
    if not info["num_clips"]:
        raise DatasetError(f"{args.dataset}: no clips ({args.dataset / INDEX} is empty); nothing "
                           "to summarise")
    if args.check or args.verify:
        check_dataset_files(args.dataset, decode=args.verify)
    write_info_plot(info, plot)
    if args.json:
        print(json.dumps({**info, "plot": str(plot)}, indent=1))
        return 0
    print(format_info(info))
    print(f"plot: {plot}")
    return 0


def check_dataset_files(root: Path, decode: bool = False, named: int = 3) -> int:
    """Every clip's files against the index (`Dataset.check_files`: the annotation reads and agrees,
    the video is there, not empty, opens, and its header agrees), with `decode` every frame too, with a
    progress bar on a terminal. DatasetError naming how many clips are bad and the first `named` of
    them (clip, file, what); returns the number of clips checked."""
    from tqdm import tqdm

    from ..errors import DatasetError, MagicMotionError
    from .reader import Dataset

    ds = Dataset(root, sampling="start")
    bad = []
    for record in tqdm(ds.records, desc="check" if not decode else "verify", unit="clip", disable=None):
        try:
            ds.check_files(record)
            if decode:
                ds.load_clip(record)
        except MagicMotionError as e:
            bad.append(str(e).removeprefix(f"{root}: "))
    if bad:
        more = f"; and {len(bad) - named} more" if len(bad) > named else ""
        raise DatasetError(f"{root}: {len(bad)} of {len(ds.records)} clips are broken: "
                           + "; ".join(bad[:named]) + more)
    return len(ds.records)


def format_info(info: dict) -> str:
    """The summary of `dataset_info` as a few lines of text."""
    def dist(d):
        return ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"

    o, f = info["num_objects"], info["num_frames"]
    lines = [
        f"dataset: {info['root']}",
        f"clips: {info['num_clips']} ({dist(info['splits'])})",
        f"objects per clip: min {o['min']}, mean {o['mean']}, max {o['max']}  "
        f"[{dist(info['objects_per_clip'])}]",
        f"frames per clip: min {f['min']}, mean {f['mean']}, max {f['max']} (total {f['total']})",
        f"sizes (WxH): {dist(info['sizes'])}",
        f"fps: {dist(info['fps'])}",
    ]
    if info["extra_fields"]:
        lines.append(f"extra fields: {', '.join(info['extra_fields'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- import-magicdata


from .magicdata import CAPTION_COLUMNS, CSV_NAME, DEFAULT_TEST_FRACTION, ENGINES, ID_COLUMNS  # noqa: E402


def add_import_parser(sub):
    p = sub.add_parser(
        "import-magicdata", help="import the released MagicData (videos, mask and box maps, CSV)",
        description="Read ROOT/MagicData.csv, decode each video's mask maps (masks/<id>/) and box "
                    "maps (boxs/<id>/) into per-object masks and boxes, check every clip, and write "
                    "the dataset layout to --out. Bad clips are skipped and named in "
                    "OUT/import.json; re-running resumes.")
    p.add_argument("root", type=Path, help="the MagicData folder (hf download quanhaol/MagicData --repo-type dataset "
                                             "--local-dir MagicData)")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created or resumed)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="decode here (default) or on Ray Data (needs ray[data])")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of the CSV")
    p.add_argument("--copy", action="store_true",
                   help="copy the videos (default: symbolic links to the release's files)")
    p.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                   help=f"share of videos in the 'test' split, by a hash of the video id "
                        f"(default {DEFAULT_TEST_FRACTION})")
    p.add_argument("--csv", type=Path, default=None, help=f"the CSV (default ROOT/{CSV_NAME})")
    p.add_argument("--id-column", default=None,
                   help=f"CSV column of the video ids (default: the first of {', '.join(ID_COLUMNS)})")
    p.add_argument("--caption-column", default=None,
                   help=f"CSV column of the captions (default: the first of {', '.join(CAPTION_COLUMNS)})")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray: parallel decoding tasks (default: one per CPU)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster address (default: a running cluster or a new local one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_import_cli)
    return p


def _import_cli(args) -> int:
    from ..errors import DatasetError
    from ..locks import output_lock
    from ..paths import check_output
    from .magicdata import import_magicdata

    check_output(args.out, [args.root, args.csv], error=DatasetError, folder=True, make_parents=True, dataset=True)
    with output_lock(args.out, "dataset"):  # one run per output
        summary = import_magicdata(args.root, args.out, engine=args.engine, limit=args.limit, copy=args.copy,
                                   test_fraction=args.test_fraction, csv_path=args.csv,
                                   id_column=args.id_column, caption_column=args.caption_column,
                                   ray_address=args.ray_address, workers=args.workers, progress=not args.quiet)
    print(summary.format())
    return 0


from .curation.cli import add_curate_parser  # noqa: E402  (issue 8: curate, filter)
from .filtering import add_filter_parser  # noqa: E402

# Subcommands of `magicmotion data`, in the order --help lists them; others append theirs here.
SUBCOMMANDS = [_add_synth, _add_info, add_curate_parser, add_filter_parser, add_import_parser]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="datasets: synthesise, inspect, curate, filter",
        description="Datasets in the shared layout: index.jsonl, videos/, annotations/ "
                    "(docs/dataset-format.md).")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    for add in SUBCOMMANDS:
        add(sub)

    def _help(args) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)


__all__ = ["SUBCOMMANDS", "format_info", "parse_size", "register"]
