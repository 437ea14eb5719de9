"""Every hub id that README.md, docs/, configs/ and src/ name is a real one, listed in docs/hub-ids.txt
(issue 24: README named Wan-AI/Wan2.1-I2V-1.3B-diffusers, which does not exist)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "docs" / "hub-ids.txt"
# Accounts whose models these files name. A new account: add it here, and its ids to docs/hub-ids.txt.
ORGS = ("Wan-AI", "THUDM", "zai-org", "alibaba-pai", "quanhaol", "IDEA-Research", "facebook", "google",
        "Qwen", "openai", "stabilityai", "microsoft", "meta-llama", "HuggingFaceTB", "nvidia", "Lightricks",
        "black-forest-labs", "laion", "timm", "hf-internal-testing")
# ORG/NAME not inside a longer path or URL (no "/", "." or word character before, no "/" after),
# except a huggingface.co URL; NAME ends on a letter or digit so a sentence's full stop stays out.
HUB_ID = re.compile(r"(?:(?<=huggingface\.co/)|(?<=huggingface\.co/datasets/)|(?<![\w./-]))"
                    r"((?:" + "|".join(map(re.escape, ORGS)) + r")/[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?)(?![\w/-])")


def known_ids() -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in LIST.read_text().splitlines())
    return {line for line in lines if line}


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "configs").rglob("*.yaml")), *sorted((ROOT / "src").rglob("*.py"))]
    return [f for f in files if f.is_file()]


def mentioned_ids() -> dict[str, list[str]]:
    """id -> ["file:line", ...] for every hub id the scanned files mention."""
    found: dict[str, list[str]] = {}
    for f in scanned_files():
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            for m in HUB_ID.finditer(line):
                found.setdefault(m.group(1), []).append(f"{f.relative_to(ROOT)}:{n}")
    return found


def test_the_list_is_well_formed():
    ids = known_ids()
    assert ids, LIST
    for i in ids:
        assert re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", i), f"{LIST}: {i!r} is not an org/name hub id"


def test_every_mentioned_hub_id_is_a_known_real_one():
    known = known_ids()
    unknown = {i: where for i, where in mentioned_ids().items() if i not in known}
    assert not unknown, (
        "hub ids not in docs/hub-ids.txt (check each on huggingface.co, then fix the name or add it): "
        + "; ".join(f"{i} at {', '.join(where)}" for i, where in sorted(unknown.items())))


def test_the_pattern_finds_ids_and_skips_paths():
    text = ("--base Wan-AI/Wan2.1-I2V-14B-480P-Diffusers. `facebook/sam2.1-hiera-tiny`, "
            "https://huggingface.co/datasets/quanhaol/MagicData and github.com/facebook/sam2 "
            "models/Qwen/Qwen2.5-0.5B-Instruct facebook/sam2/configs ./facebook/x notfacebook/x")
    assert [m.group(1) for m in HUB_ID.finditer(text)] == [
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "facebook/sam2.1-hiera-tiny", "quanhaol/MagicData"]
    assert "THUDM/CogVideoX-5b-I2V" in mentioned_ids()  # the scan reaches configs/ and docs/


def test_every_download_line_uses_the_installed_hf_cli():
    """Issue 38: docs said `huggingface-cli download`, which the pinned huggingface_hub no longer has.
    Every download line in README.md, docs/ and configs/ is `hf download REPO [--repo-type dataset]
    [--local-dir DIR]`, and every option it uses is one `hf download --help` lists."""
    import shlex
    import subprocess
    import sys

    hf = Path(sys.executable).parent / "hf"
    helped = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    options = set(re.findall(r"(--[a-z][a-z-]+)", helped.stdout))
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "configs").rglob("*.yaml"))]
    seen = 0
    for f in files:
        for line in f.read_text().splitlines():
            assert "huggingface-cli download" not in line or "authors' README writes" in line, f"{f}: {line}"
            command = re.search(r"\bhf download [^`#]*", line)
            if not command:
                continue
            seen += 1
            words = shlex.split(command.group(0).strip().rstrip(")"))
            assert HUB_ID.fullmatch(words[2]) or "/" in words[2], f"{f}: {line}"
            used = {w for w in words if w.startswith("--")}
            assert used <= options, f"{f}: {line}: {used - options} not in hf download --help"
    assert seen >= 8
