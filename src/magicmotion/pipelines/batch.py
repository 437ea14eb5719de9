"""`magicmotion generate --csv FILE`: many videos from one CSV, one row per video, resumable and split
across processes (`accelerate launch`). A drop-in for the authors' release CSVs
(`magicmotion/validation_args/demo/demo_{mask,box,sparse_box}.csv`).

Columns (a header line is required; names are matched without case or surrounding spaces; each field
may be named once, in either naming; any other column is an error):

    field          ours            the release's                required
    prompt         prompt          validation_prompt            yes
    image          image           validation_images            yes   first frame
    trajectory     trajectory      validation_trajectory_maps   yes   spec (.json), map video or frame folder
    out            out             output_path                  yes   output video (.mp4) or a folder
    control_scale  control_scale   controlnet_weights           no    ControlNet conditioning scale
    seed           seed                                         no    0..2^32-1 (blank: a random one)
    controlnet     controlnet                                   no    a ControlNet folder, .pt or hub id
    kind           kind                                         no    mask | box | sparse_box

The release's `controlnet_weights` is the control scale (1.0 in every demo row; its inference script
passes it to the pipeline as `controlnet_weights=float(weight)`), not a checkpoint: the checkpoint is
the CLI's `--controlnet` unless a `controlnet` column names one per row. Blank optional cells mean
"the CLI's value".

Paths: absolute paths are kept; relative ones are resolved against one base folder per file: the
CSV's folder, or, when no relative image or trajectory of any row exists there, the nearest folder above
it where one does, else the current folder. The release's CSVs name paths from the repository root
(three folders above the CSV, where its scripts run), so they work from anywhere inside that checkout.
A relative `controlnet` is resolved against the base when it exists there, else kept as written (a
hub id, or a path from the current folder).

Outputs: an `out` ending in `.mp4` is the video; one ending in `/`, naming an existing folder or
having no suffix is a folder, and the video is `<folder>/<trajectory stem>.mp4` (the trajectory's file
or folder name without its suffix). Missing output folders are made before a row runs (as the release
does). A row whose video exists is skipped, so a stopped run resumes; `write_outputs` writes the
mp4 last, so an existing mp4 is a finished row.

Problems found by `read_rows` (a missing image or trajectory, a bad seed, scale or kind, an output that
is not .mp4, one named by an earlier row, or one whose companion files would overwrite the row's
inputs, a row with too many or too few cells) make that row bad: it is reported by line and the other
rows still run. A file that cannot be read at all (missing, not UTF-8, no header, unknown or missing
columns) raises `ConfigError`.

Processes: row i of the file goes to process i % N (`process_split`). On GPUs,
`accelerate launch --num_processes N` (one GPU each: `process_device`); on CPUs,
`torchrun --nproc_per_node N` (`accelerate launch --cpu` on one machine starts a single process, which
then runs every row).
"""

from __future__ import annotations

import csv
import gc
import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

from ..errors import ConfigError, MagicMotionError

# column name -> field, both namings
COLUMNS = {
    "prompt": "prompt", "validation_prompt": "prompt",
    "image": "image", "validation_images": "image",
    "trajectory": "trajectory", "validation_trajectory_maps": "trajectory",
    "out": "out", "output_path": "out",
    "control_scale": "control_scale", "controlnet_weights": "control_scale",
    "seed": "seed",
    "controlnet": "controlnet",
    "kind": "kind",
}
REQUIRED = ("prompt", "image", "trajectory", "out")
OURS = "prompt,image,trajectory,out[,control_scale,seed,controlnet,kind]"
RELEASE = "validation_prompt,validation_images,validation_trajectory_maps,output_path[,controlnet_weights,seed]"


@dataclass(frozen=True)
class Row:
    """One CSV row. Paths are resolved (see the module docstring). `problem` is None for a row that can
    run, else why it cannot (the row is reported as bad and not run)."""

    line: int  # line number in the file (1 is the header)
    prompt: str
    image: Path
    trajectory: Path
    out: Path  # the output video (.mp4)
    controlnet: str | None = None  # None: the CLI's --controlnet
    control_scale: float | None = None  # None: the CLI's --control-scale
    seed: int | None = None  # None: a random seed
    kind: str | None = None  # None: the CLI's --kind (or the kind the map video shows)
    problem: str | None = None


def read_rows(csv_path: str | os.PathLike) -> list[Row]:
    """The rows of a generation CSV, in file order, each resolved and checked (see the module docstring).
    Rows with a problem are returned with `problem` set, not raised.

    Raises:
        ConfigError: the file is missing, not UTF-8, or its header is missing or has unknown columns.
    """
    from ..trajectory.render import KINDS
    from .generate import output_paths

    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError(f"{path}: CSV not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    while header is not None and not any(c.strip() for c in header):  # leading blank lines
        header = next(reader, None)
    if header is None:
        raise ConfigError(f"{path}: empty CSV; expected a header: {OURS} or the release's {RELEASE}")
    fields = _header_fields(path, header)

    raw: list[tuple[int, dict[str, str], str | None]] = []
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        problem = None
        if len(cells) != len(fields):
            problem = f"{len(cells)} cells, the header has {len(fields)}"
            cells = (cells + [""] * len(fields))[:len(fields)]
        raw.append((line, {f: c.strip() for f, c in zip(fields, cells)}, problem))

    base = _base_folder(path.parent, raw)
    rows, taken = [], {}
    for line, cells, problem in raw:
        image = _resolve(base, cells["image"])
        trajectory = _resolve(base, cells["trajectory"])
        out, out_problem = _output(base, cells["out"], trajectory)
        values: dict[str, Any] = {}
        try:
            values = dict(seed=_seed(cells.get("seed", "")), control_scale=_scale(cells.get("control_scale", "")),
                          kind=_kind(cells.get("kind", ""), KINDS),
                          controlnet=_controlnet(base, cells.get("controlnet", "")))
        except ValueError as e:
            problem = problem or str(e)
        if problem is None:
            problem = _check_files(image, trajectory, cells) or out_problem
        if problem is None:
            inputs = {image.resolve(), trajectory.resolve()}
            clash = [f"{name} file {p}" for name, p in output_paths(out).items() if p.resolve() in inputs]
            if clash:
                problem = f"output {out}: its {clash[0]} would overwrite an input"
        if problem is None:  # the one output guard (paths.py): not in a dataset, writable, before any model
            from ..errors import MediaError
            from ..paths import check_output

            try:
                check_output(out, [image, trajectory], error=MediaError, make_parents=True)
            except MediaError as e:
                problem = str(e)
        if problem is None:
            key = out.resolve().with_suffix("")  # the companions (NAME.json, NAME.preview.*) go by the stem
            if key in taken:
                problem = f"output {out} is also the output of line {taken[key]}"
            else:
                taken[key] = line
        rows.append(Row(line=line, prompt=cells["prompt"], image=image, trajectory=trajectory, out=out,
                        problem=problem, **values))
    return rows


def _header_fields(path: Path, header: list[str]) -> list[str]:
    expected = f"expected a header {OURS} or the release's {RELEASE}"
    names = [h.strip().lower() for h in header]
    unknown = [h for h in names if h not in COLUMNS]
    if unknown:
        raise ConfigError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; {expected}")
    fields = [COLUMNS[h] for h in names]
    twice = sorted({f for f in fields if fields.count(f) > 1})
    if twice:
        raise ConfigError(f"{path}: column(s) for {', '.join(twice)} given more than once; {expected}")
    missing = [f for f in REQUIRED if f not in fields]
    if missing:
        raise ConfigError(f"{path}: missing column(s) for {', '.join(missing)}; {expected}")
    return fields


def _base_folder(csv_dir: Path, raw: list[tuple[int, dict[str, str], str | None]]) -> Path:
    """The folder relative paths are taken from: the first of the CSV's folder, the folders above it and
    the current folder under which some row's relative image or trajectory exists."""
    relative = [Path(c[k]).expanduser() for _, c, _ in raw for k in ("image", "trajectory") if c[k]]
    relative = [p for p in relative if not p.is_absolute()]
    if not relative:
        return csv_dir
    for folder in (csv_dir, *csv_dir.resolve().parents, Path.cwd()):
        if any((folder / p).exists() for p in relative):
            return folder
    return csv_dir


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _output(base: Path, value: str, trajectory: Path) -> tuple[Path, str | None]:
    """The output video for a cell (see the module docstring) and a problem, if any."""
    if not value:
        return base, "no output path"
    out = _resolve(base, value)
    if value.endswith(("/", os.sep)) or out.is_dir() or not out.suffix:
        return out / (Path(trajectory.name).stem + ".mp4"), None
    if out.suffix.lower() != ".mp4":
        return out, f"output {out} must be an .mp4 file or a folder"
    return out, None


def _seed(value: str) -> int | None:
    if not value:
        return None
    try:
        seed = float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        raise ValueError(f"seed must be a whole number in 0..2^32-1, got {value!r}") from None
    if seed != int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be a whole number in 0..2^32-1, got {value!r}")
    return int(seed)


def _scale(value: str) -> float | None:
    if not value:
        return None
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"control scale (controlnet_weights) must be a number such as 1.0, got {value!r}; "
                         "name a checkpoint with a 'controlnet' column or --controlnet") from None
    if not math.isfinite(scale) or not 0 <= scale <= 100:
        raise ValueError(f"control scale (controlnet_weights) must be in 0..100, got {value!r}")
    return scale


def _kind(value: str, kinds: tuple[str, ...]) -> str | None:
    if value and value not in kinds:
        raise ValueError(f"unknown kind {value!r}: expected one of {', '.join(kinds)}")
    return value or None


def _controlnet(base: Path, value: str) -> str | None:
    if not value:
        return None
    p = Path(value).expanduser()
    if not p.is_absolute() and (base / p).exists():
        return str(base / p)
    return str(p)


def _check_files(image: Path, trajectory: Path, cells: dict[str, str]) -> str | None:
    if not cells["image"]:
        return "no image path"
    if not cells["trajectory"]:
        return "no trajectory path"
    if not image.is_file():
        return f"image {image} not found"
    if not trajectory.exists():
        return f"trajectory {trajectory} not found"
    return None


def process_split() -> tuple[int, int]:
    """(this process's index, number of processes): from accelerate's `PartialState` when launched
    with more than one process (`accelerate launch`, `torchrun`: WORLD_SIZE and RANK set), else (0, 1).
    On a machine without CUDA (or with `accelerate launch --cpu`) the processes are CPU processes."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return 0, 1
    state = _partial_state()
    if state.num_processes == world:
        return state.process_index, state.num_processes
    return _env_int("RANK", 0), world  # accelerate saw one process: the launcher's numbers, never all rows twice


def process_device() -> str | None:
    """This process's device under a multi-process launch (e.g. cuda:1 for the second process on a
    machine), else None (the CLI's --device or its default)."""
    if _env_int("WORLD_SIZE", 1) <= 1:
        return None
    device = _partial_state().device
    return "cpu" if device.type == "cpu" else str(device)


def wait_for_everyone() -> None:
    """A barrier across the processes of a launched run (accelerate's); nothing in a single process."""
    if _env_int("WORLD_SIZE", 1) > 1:
        _partial_state().wait_for_everyone()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a whole number, got {value!r}") from None


def _partial_state():
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState() alone makes no process group on a machine without an accelerator
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def run_csv(csv_path: str | os.PathLike, generate_row: Callable[[Row], None], *, process_index: int = 0,
            num_processes: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run `generate_row` on every row of a generation CSV (`read_rows`) that is this process's
    (row i of the file, counting bad rows too, is process i % num_processes's), in file order.

    A row whose output video exists is skipped. A `MagicMotionError` from `generate_row` fails that row
    ("FILE line N: message" is printed) and the run goes on; any other exception propagates (a bug).
    Output folders are made before a row runs. A summary line is printed at the end (to stderr).

    Returns:
        {"csv": path, "rows": rows in the file, "process": (index, count), "done": [line, ...],
         "skipped": [line, ...] (output existed), "failed": [(line, message), ...],
         "bad": [(line, message), ...] (rows `read_rows` found a problem with; not run)}.
        `exit_code(summary)` is 2 when any row failed or was bad, else 0.
    Raises:
        ConfigError: the CSV cannot be read (see `read_rows`), or the process split is invalid.
    """
    from tqdm import tqdm

    if not 0 <= process_index < num_processes:
        raise ConfigError(f"process {process_index} of {num_processes}: expected 0 <= index < count")
    rows = read_rows(csv_path)
    mine = rows[process_index::num_processes]
    summary: dict[str, Any] = {"csv": str(csv_path), "rows": len(rows), "process": (process_index, num_processes),
                               "done": [], "skipped": [], "failed": [], "bad": []}

    def report(kind: str, line: int, message: str) -> None:
        summary[kind].append((line, message))
        tqdm.write(f"{csv_path} line {line}: {message}", file=sys.stderr)

    for row in mine:
        if row.problem is not None:
            report("bad", row.line, row.problem)
    good = [row for row in mine if row.problem is None]
    desc = Path(csv_path).name + (f" [{process_index + 1}/{num_processes}]" if num_processes > 1 else "")
    with tqdm(total=len(good), desc=desc, unit="video", disable=not progress or process_index != 0) as bar:
        for row in good:
            if row.out.is_file():
                summary["skipped"].append(row.line)
            else:
                try:
                    row.out.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    report("failed", row.line, f"cannot make output folder {row.out.parent}: {e.strerror or e}")
                    bar.update()
                    continue
                try:
                    generate_row(row)
                except MagicMotionError as e:
                    report("failed", row.line, str(e))
                else:
                    summary["done"].append(row.line)
            bar.update()
    print(summary_line(summary), file=sys.stderr)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """'FILE: 3 done, 1 skipped (output exists), 1 failed, 0 bad of 5 rows' (+ the process when split)."""
    index, count = summary["process"]
    where = f" (process {index + 1} of {count})" if count > 1 else ""
    return (f"{summary['csv']}: {len(summary['done'])} done, {len(summary['skipped'])} skipped (output exists), "
            f"{len(summary['failed'])} failed, {len(summary['bad'])} bad of {summary['rows']} rows{where}")


def exit_code(summary: dict[str, Any]) -> int:
    """2 when any row failed or was bad, else 0."""
    return 2 if summary["failed"] or summary["bad"] else 0


def make_row_generator(load: Callable[[Any], Any], run_one: Callable[[Any, Row], None], *,
                       key: Callable[[Row], Hashable] = lambda row: row.controlnet) -> Callable[[Row], None]:
    """A `generate_row` for `run_csv` that loads a pipeline only when a row needs another one.

    `load(key(row))` makes the pipeline (by default the key is the row's `controlnet`, None for the
    CLI's; pass e.g. `key=lambda r: (r.controlnet, r.kind)` when the kind picks the checkpoint);
    `run_one(pipe, row)` makes and writes the row's video. One pipeline is held at a time: the previous
    one is released before the next loads, so rows sorted by key load each pipeline once. A load that
    raises leaves nothing cached (the next row tries again).
    """
    held: dict[str, Any] = {}

    def generate_row(row: Row) -> None:
        k = key(row)
        if "pipe" not in held or held["key"] != k:
            if held:
                held.clear()
                _release_memory()
            pipe = load(k)
            held.update(key=k, pipe=pipe)
        run_one(held["pipe"], row)

    return generate_row


def _release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["COLUMNS", "Row", "exit_code", "make_row_generator", "process_device", "process_split", "read_rows",
           "run_csv", "summary_line", "wait_for_everyone"]
