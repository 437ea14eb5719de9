"""The package's layers, read from its imports: every import of a library module points down (or
sideways within its layer), and no library module imports a command line. docs/architecture.md shows
the same graph; `python tests/test_architecture.py --write` redraws it there after a change.

The graph is built with `ast` from the source (every `import` and `from ... import`, lazy ones inside
functions too), not by importing the package, so a test here cannot be fooled by import order.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "magicmotion"
DOC = ROOT / "docs" / "architecture.md"

# Bottom to top. A library module may import its own layer and those below it.
LAYERS = [
    ("foundation", ("errors", "limits", "io", "locks", "hub", "logfilters", "paths", "sheet", "lazy")),
    ("perception and trajectories", ("trajectory", "perception")),
    ("models", ("models",)),
    ("pipelines", ("pipelines",)),
    ("data, training, benchmark", ("data", "training", "bench")),
    ("command line and app", ("app", "demo", "cli", "__main__")),
]
LAYER_OF = {part: n for n, (_, parts) in enumerate(LAYERS) for part in parts}
TOP = len(LAYERS) - 1


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_cli(module: str) -> bool:
    """A command-line module: `cli`, `*_cli`, the entry points; they sit on top whatever their folder."""
    last = module.split(".")[-1]
    return last in ("cli", "__main__") or last.endswith("_cli") or module == "magicmotion.cli"


def part_of(module: str) -> str:
    """magicmotion.data.curation.stages -> data; magicmotion -> "" (the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int:
    if is_cli(module) or part_of(module) == "":
        return TOP
    return LAYER_OF[part_of(module)]


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported magicmotion module, line) for every import in a file; `from .. import x` names the
    submodule x when there is one."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "magicmotion"]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "magicmotion":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                found.append((sub if is_module else target, node.lineno))
    return found


def import_graph() -> list[tuple[str, str, int]]:
    """(importer, imported, line) over the whole package."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        edges += [(module_name(path), target, line) for target, line in imports(path)]
    return edges


def violations(edges) -> list[str]:
    bad = []
    for src, dst, line in edges:
        if src == "magicmotion" or dst == "magicmotion":
            continue  # the root package: its version and log filters (installed on import)
        where = f"{src} (line {line}) imports {dst}"
        if is_cli(src) or layer_of(src) == TOP:
            continue
        if is_cli(dst):
            bad.append(f"{where}: a library module imports a command line")
        elif layer_of(dst) > layer_of(src):
            bad.append(f"{where}: upward, from {LAYERS[layer_of(src)][0]} to {LAYERS[layer_of(dst)][0]}")
    return bad


def part_edges(edges) -> list[tuple[str, str]]:
    """The arrows between parts above the foundation (every part uses the foundation; the command
    line imports everything)."""
    pairs = set()
    for src, dst, _ in edges:
        a, b = part_of(src), part_of(dst)
        if a and b and a != b and not is_cli(src) and layer_of(src) < TOP and layer_of(dst) > 0:
            pairs.add((a, b))
    return sorted(pairs)


def mermaid(edges) -> str:
    lines = ["```mermaid", "flowchart BT"]
    for n, (name, parts) in enumerate(LAYERS[1:-1], start=1):
        present = [p for p in parts if (PACKAGE / p).is_dir() or (PACKAGE / f"{p}.py").is_file()]
        lines.append(f'  subgraph L{n}["{n}: {name}"]')
        lines += [f"    {p}" for p in present]
        lines.append("  end")
    lines += [f"  {a} --> {b}" for a, b in part_edges(edges)]
    lines.append("```")
    return "\n".join(lines)


GRAPH = re.compile(r"<!-- import graph: begin -->(.*?)<!-- import graph: end -->", re.S)


def test_no_upward_import_and_no_library_imports_a_command_line():
    bad = violations(import_graph())
    assert not bad, "\n".join(bad)


def test_the_rule_catches_an_upward_and_a_cli_import():
    """The checker itself: a trajectory module importing data, and a pipeline importing its CLI."""
    fake = [("magicmotion.trajectory.decode", "magicmotion.data.dataset", 1),
            ("magicmotion.pipelines.conditions", "magicmotion.pipelines.cli", 2),
            ("magicmotion.models.convert", "magicmotion.training.config", 3),
            ("magicmotion.bench.score", "magicmotion.data.dataset", 4),  # sideways: allowed
            ("magicmotion.pipelines.cli", "magicmotion.training.config", 5)]  # a CLI: allowed
    bad = violations(fake)
    assert len(bad) == 3 and "upward" in bad[0] and "command line" in bad[1] and "upward" in bad[2]


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert parts <= set(LAYER_OF), f"parts without a layer: {sorted(parts - set(LAYER_OF))}"


def test_the_picture_in_docs_is_the_import_graph():
    found = GRAPH.search(DOC.read_text())
    assert found, f"{DOC}: no import graph block"
    assert found.group(1).strip() == mermaid(import_graph()), \
        "docs/architecture.md's graph is out of date: run python tests/test_architecture.py --write"


@pytest.mark.parametrize("model", ["GroundingDinoForObjectDetection", "Sam2VideoModel", "Sam2Model"])
def test_each_outside_perception_model_is_built_in_perception_only(model):
    """Grounding DINO and SAM 2 are constructed (from_pretrained or their config) in one package."""
    uses = re.compile(rf"\b{model}\b(\.from_pretrained|\()")
    where = {p.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("*.py") if uses.search(p.read_text())}
    assert where == {"perception"}, f"{model} built in {sorted(where)}"


if __name__ == "__main__" and "--write" in sys.argv:
    text = DOC.read_text()
    block = "<!-- import graph: begin -->\n" + mermaid(import_graph()) + "\n<!-- import graph: end -->"
    DOC.write_text(GRAPH.sub(lambda _: block, text))
    print(f"wrote the import graph into {DOC}")
