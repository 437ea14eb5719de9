"""Model names: a local folder or a Hugging Face Hub id, and what to do when the hub is out of reach.

Every place that loads weights by name (the base, its transformer config, a ControlNet, the curation
models, SAM 2) passes the name through `resolve_pretrained` first:

- a name that looks like a path (`./x`, `/x`, `~/x`, `a/b/c`, `a\\b`, or `org/name` where a local
  folder `org` exists) must exist: otherwise "<path>: ... folder not found" at once, never a hub lookup;
- an `org/name` hub id is used as is when the hub answers; when it does not (no network, an
  unreachable `HF_ENDPOINT`) or `HF_HUB_OFFLINE=1` is set, the id loads from the local Hugging Face
  cache (the snapshot folder comes back) or fails at once with one line saying how to fix it, instead
  of minutes of retries and a misleading "does not appear to have a file named ...".
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

from .errors import ModelError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_ENDPOINT = "https://huggingface.co"
REACH_TIMEOUT = 2.0  # seconds the connectivity check may take, DNS included
# First components that name local folders, never hub accounts ("models" is reserved by the hub):
# `models/Wan2.1-Fun-1.3B-InP-Diffusers` is a folder to make, not an id to fetch.
LOCAL_ROOTS = frozenset({"models", "runs", "outputs", "checkpoints", "converted"})


def looks_like_path(name: str | os.PathLike) -> bool:
    """True for a name meant as a local path: it starts with `.`, `/` or `~`, has a backslash, a drive
    letter or more than one `/`, or its first component is an existing local folder or one of
    `LOCAL_ROOTS` (`models/Wan2.1-...`). Any other `org/name` is a hub id."""
    s = str(name)
    if s.startswith((".", "/", "~")) or "\\" in s or re.match(r"^[A-Za-z]:", s) or s.count("/") > 1:
        return True
    root = s.split("/", 1)[0]
    return "/" in s and (root in LOCAL_ROOTS or Path(root).is_dir())


def is_hub_id(name: str | os.PathLike) -> bool:
    """`org/name` that is not a local path: a model on the Hugging Face Hub."""
    s = str(name)
    return not Path(s).exists() and not looks_like_path(name) and bool(HUB_ID.match(s))


def hub_endpoint() -> str:
    """The hub's address: `HF_ENDPOINT` when set, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_forced() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to a true value."""
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=8)
def _reachable(endpoint: str, timeout: float) -> bool:
    result = [False]

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            result[0] = True
        except urllib.error.HTTPError as e:  # a hub (or a mirror) that wants a token, or no HEAD, is there;
            result[0] = e.code in (401, 403, 405)  # a 404 / 5xx at its root is not a hub
        except Exception:  # noqa: BLE001 - DNS, refused, TLS, timeout: not reachable
            result[0] = False

    thread = threading.Thread(target=probe, daemon=True)  # the thread bounds DNS lookups too
    thread.start()
    thread.join(timeout)
    return result[0]


def hub_reachable(timeout: float = REACH_TIMEOUT) -> bool:
    """Whether the hub endpoint's root answers within `timeout` s (proxies from the environment
    apply), with a success or 401/403/405. The answer is remembered per endpoint for the process."""
    return _reachable(hub_endpoint(), float(timeout))


def cache_dir() -> Path:
    """The Hugging Face hub cache folder (HF_HUB_CACHE, or HF_HOME/hub, or ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_snapshot(repo_id: str, file: str = "config.json") -> Path | None:
    """The cached snapshot folder of `repo_id` (its main revision) when it holds `file`, else None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, file, cache_dir=cache_dir())
    if not isinstance(found, str):
        return None
    path = Path(found)
    for _ in Path(file).parts:
        path = path.parent
    return path


def resolve_pretrained(name: str | os.PathLike, what: str = "model", file: str = "config.json") -> str | Path:
    """Where to load `name` from: a local folder or file (a Path), a hub id to fetch (the str), or,
    when the hub cannot be reached, the cached snapshot folder of that id (a Path).

    Args:
        what: names the model in messages ("base model", "ControlNet", "SAM 2 model").
        file: a file the model always has at its root, to tell a cached copy from a partial one.
    Raises:
        ModelError: a path-looking name that does not exist; a name that is neither a path nor an
            `org/name` id; a hub id with the hub unreachable and the id not in the local cache.
    """
    s = str(name)
    if Path(s).expanduser().exists():
        return Path(s).expanduser()
    if looks_like_path(name):
        raise ModelError(f"{s}: {what} folder not found")
    if not HUB_ID.match(s):
        raise ModelError(f"{s}: {what} not found (neither a local folder nor a hub id like org/name)")
    forced = offline_forced()
    if not forced and hub_reachable():
        return s
    snapshot = cached_snapshot(s, file)
    if snapshot is not None:
        return snapshot
    why = "HF_HUB_OFFLINE is set" if forced else f"cannot reach the hub ({hub_endpoint()})"
    raise ModelError(
        f"{s}: {why} and {s} is not in the local cache ({cache_dir()}): download it on a machine with "
        f"network (`hf download {s}`) and copy that cache here or point HF_HOME at it, or pass a local folder"
    )


def require_models(models: list[tuple[str | os.PathLike, str, str]]) -> None:
    """Check, before any loads, that every (name, what, flag) can be had; one ModelError naming every
    one that cannot, each with the command that gets it (a hub id) or the flag that points elsewhere."""
    missing, why = [], None
    for name, what, flag in models:
        try:
            resolve_pretrained(name, what)
        except ModelError:
            s = str(name)
            if HUB_ID.match(s) and not looks_like_path(name):
                missing.append(f"{what} {s} (get it: hf download {s})")
                why = "HF_HUB_OFFLINE is set" if offline_forced() else f"the hub ({hub_endpoint()}) cannot be reached"
            else:
                missing.append(f"{what} {s}: folder not found (check {flag})")
    if missing:
        where = (f"; {why} and these are not in the local cache ({cache_dir()}): run the commands on a machine "
                 "with network and copy that cache here, or point HF_HOME at it") if why else ""
        raise ModelError(f"{len(missing)} model{'s' if len(missing) > 1 else ''} missing: "
                         + "; ".join(missing) + where)


__all__ = ["cache_dir", "cached_snapshot", "hub_endpoint", "hub_reachable", "is_hub_id", "looks_like_path",
           "offline_forced", "require_models", "resolve_pretrained"]
