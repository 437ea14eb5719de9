"""Reports over scored runs: a Markdown table laid out like the paper's Table 1 (one row per run: FID,
FVD, Mask IoU %, Box IoU %, then frame-0 PSNR, late-frame background PSNR and object colour error),
per-bucket tables, a PNG chart of each metric by number of objects like its Figure 4, and a JSON of
all of it.

    OUT/report.md   OUT/by_objects.png   OUT/report.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import BenchError
from .score import read_scores
from .sets import bucket_sort_key

# (key in scores, column title, shown as a percentage)
METRICS = (("fid", "FID ↓", False), ("fvd", "FVD ↓", False), ("mask_iou", "Mask IoU (%) ↑", True),
           ("box_iou", "Box IoU (%) ↑", True), ("frame0_psnr", "Frame 0 PSNR (dB) ↑", False),
           ("background_psnr", "Late background PSNR (dB) ↑", False),
           ("colour_error", "Object colour error ↓", False))


def _cell(value, percent: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.2f}"


def report(run_dirs, out: str | os.PathLike, labels: list[str] | None = None) -> dict:
    """Write OUT/report.md, OUT/by_objects.png and OUT/report.json for the scored runs `run_dirs`
    (rows in the order given; `labels` replace the runs' own labels). Returns the report's JSON."""
    from ..io import atomic_path

    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise BenchError("report: no runs given")
    if labels is not None and len(labels) != len(run_dirs):
        raise BenchError(f"report: {len(labels)} labels for {len(run_dirs)} runs")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out}: is a file, expected a folder for the report")
    scores = [read_scores(d) for d in run_dirs]  # every run read before the folder is made
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, (d, s) in enumerate(zip(run_dirs, scores)):
        runs.append({"label": labels[i] if labels else s["run"]["label"], "dir": str(d),
                     "bench": s["run"]["bench"], "settings": s["run"]["settings"],
                     "segmenter": s["segmenter"]["name"], "overall": s["overall"],
                     "buckets": s["buckets"], "notes": s.get("notes", [])})
    buckets = sorted({b for r in runs for b in r["buckets"]}, key=bucket_sort_key)
    notes = []
    if len({r["bench"] for r in runs}) > 1:
        notes.append("The runs were scored on different benchmark sets: "
                     + ", ".join(f"{r['label']}: {r['bench']}" for r in runs))
    if len({r["segmenter"] for r in runs}) > 1:
        notes.append("The runs were scored with different segmenters: "
                     + ", ".join(f"{r['label']}: {r['segmenter']}" for r in runs))
    by_note: dict[str, list[str]] = {}
    for r in runs:
        for n in r["notes"]:
            by_note.setdefault(n, []).append(r["label"])
    notes.extend(f"{', '.join(names) if len(names) < len(runs) else 'all runs'}: {n}"
                 for n, names in by_note.items())

    data = {"runs": runs, "buckets": buckets, "notes": notes,
            "files": {"markdown": "report.md", "chart": "by_objects.png"}}
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_markdown(runs, buckets, notes))
    _chart(runs, buckets, out / "by_objects.png")
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
    return data


def _markdown(runs: list[dict], buckets: list[str], notes: list[str]) -> str:
    lines = ["# Benchmark report", ""]
    benches = sorted({r["bench"] for r in runs})
    lines.append(f"Benchmark: {', '.join(benches)}. Segmenter: "
                 f"{', '.join(sorted({r['segmenter'] for r in runs}))}. "
                 "IoU: frames 1..T-1, averaged over frames, then objects, then clips; background PSNR and "
                 "colour error over frames T//2..T-1 (docs/benchmark.md).")
    lines += ["", "| Run | Clips | " + " | ".join(t for _, t, _ in METRICS) + " |",
              "|---|---:|" + "---:|" * len(METRICS)]
    for r in runs:
        o = r["overall"]
        lines.append(f"| {r['label']} | {o['clips']} | "
                     + " | ".join(_cell(o.get(k), p) for k, _, p in METRICS) + " |")
    lines += ["", "## By number of objects", "", "![metrics by number of objects](by_objects.png)", ""]
    for key, title, percent in METRICS:
        lines += [f"### {title}", "", "| Run | " + " | ".join(buckets) + " |",
                  "|---|" + "---:|" * len(buckets)]
        for r in runs:
            cells = [_cell(r["buckets"].get(b, {}).get(key), percent) for b in buckets]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    counts = " | ".join(str(runs[0]["buckets"].get(b, {}).get("clips", 0)) for b in buckets)
    lines += ["Clips per bucket (first run): | " + counts + " |", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _chart(runs: list[dict], buckets: list[str], path: Path) -> None:
    from ..io import pyplot, write_figure

    plt = pyplot()

    rows = -(-len(METRICS) // 4)  # four panels a row: the IoU / FID row, then the appearance row
    fig, grid = plt.subplots(rows, 4, figsize=(16, 3.6 * rows), dpi=100, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(METRICS):]:
        ax.set_visible(False)
    axes = axes[:len(METRICS)]
    xs = list(range(len(buckets)))
    for ax, (key, title, percent) in zip(axes, METRICS):
        for r in runs:
            pts = [(x, r["buckets"].get(b, {}).get(key)) for x, b in zip(xs, buckets)]
            pts = [(x, 100 * v if percent else v) for x, v in pts if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=r["label"])
        ax.set_xticks(xs)
        ax.set_xticklabels(buckets)
        ax.set_xlabel("number of objects")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, names = axes[-1].get_legend_handles_labels()
    if not handles:
        for ax in axes:
            handles, names = ax.get_legend_handles_labels()
            if handles:
                break
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(len(runs), 4), frameon=False)
    fig.tight_layout(rect=(0, (0.1 / rows) if handles else 0, 1, 1))
    write_figure(fig, path)
