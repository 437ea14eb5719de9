"""The `magicmotion` command. Subcommands are the parts of the system; each part's `cli.py` adds its
own parser with `register(subparsers)` and keeps heavy imports inside the command function."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback

from . import __version__
from .errors import MagicMotionError

# (module, what it registers) in the order `--help` lists them.
PARTS = [
    "magicmotion.trajectory.cli",  # trajectory render | from-masks | preview
    "magicmotion.data.cli",  # data synth | info | curate | filter
    "magicmotion.models.cli",  # convert official | wan-fun
    "magicmotion.training.plan",  # plan
    "magicmotion.pipelines.cli",  # generate
    "magicmotion.training.cli",  # train, train precompute
    "magicmotion.bench.cli",  # bench build | davis | run | score | report
    "magicmotion.app.cli",  # app
    "magicmotion.demo",  # demo
]


# errors of a path the user named, wherever it is first touched (cli.main: one line, exit 2)
PATH_ERRORS = {errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ELOOP,
               errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOENT, errno.EEXIST, errno.ENXIO}


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (unknown flag, bad type, missing argument) are one line
    and exit 2 like every other refusal, instead of the usage block and the error. Subcommand parsers
    are made of the same class (`add_subparsers` uses the parent's), so every command answers alike."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, "_extras_of"):  # the innermost (sub)command left them over
            namespace._extras_of = self
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:  # named by the subcommand they were given to, not the top-level parser
            getattr(namespace, "_extras_of", self).error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def error(self, message: str):
        where = self.prog.removeprefix("magicmotion").strip()
        self.exit(2, f"magicmotion: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="magicmotion",
        description="Trajectory-controlled image-to-video generation (MagicMotion).",
    )
    parser.add_argument("--version", action="version", version=f"magicmotion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # a part not built yet
                continue
            raise
        module.register(sub)
    return parser


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """`--verbose` on every command and subcommand: library progress bars and messages all shown."""
    if not any("--verbose" in a.option_strings for a in parser._actions):
        parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                            help="show every library progress bar and message (default: one bar per long step)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                add_verbose(child)


def one_line(message: str) -> str:
    """A message as one line of plain text: a library's line breaks and blank lines become single
    spaces, its terminal colour codes (torch's bold "do those steps") are dropped."""
    import re

    return " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", message).split())


def main(argv: list[str] | None = None) -> int:
    from . import logfilters

    parser = build_parser()
    add_verbose(parser)
    args = parser.parse_args(argv)
    logfilters.VERBOSE = bool(getattr(args, "verbose", False))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except MagicMotionError as e:  # one line, even when a library's message spans several
        print("magicmotion: error: " + one_line(str(e)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("magicmotion: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `magicmotion data info D | head`: the reader left; no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a pipe's writer ended by SIGPIPE
    except OSError as e:
        if e.errno not in PATH_ERRORS or e.filename is None:
            traceback.print_exc()
            print(f"magicmotion: internal error: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        # a path the user gave that the system refuses (a name too long, a folder not writable, a file
        # in the way, a loop of links): bad input wherever it is first touched, so one line and exit 2
        print(f"magicmotion: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: the traceback says where; exit 1
        traceback.print_exc()
        print(f"magicmotion: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
