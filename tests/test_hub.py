"""Model names: paths fail at once when missing; hub ids out of reach load from the local cache or fail at
once in one line (issue 24)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from magicmotion import hub
from magicmotion.errors import ModelError
from magicmotion.hub import is_hub_id, looks_like_path, resolve_pretrained

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: refused at once


@pytest.fixture
def hf_env(monkeypatch, tmp_path):
    """An empty HF cache of our own, no offline flag, and the connectivity answer not remembered."""
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub._reachable.cache_clear()
    yield tmp_path / "hf" / "hub"
    hub._reachable.cache_clear()


def fake_cache(cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """A snapshot of `repo_id` laid out as huggingface_hub stores it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    for name, text in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text(text)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return snap


# ---------------------------------------------------------------------------- which names are paths


@pytest.mark.parametrize("name", ["./x", "../x", "/abs/model", "~/model", "models/Wan2.1-1.3B-I2V-Diffusers",
                                  "runs/stage2/final/controlnet", "a/b/c", "org\\name", "C:/models/x"])
def test_path_looking_names_are_paths(name):
    assert looks_like_path(name) and not is_hub_id(name)


@pytest.mark.parametrize("name", ["Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "THUDM/CogVideoX-5b-I2V",
                                  "facebook/sam2.1-hiera-tiny", "alibaba-pai/Wan2.1-Fun-1.3B-InP"])
def test_org_name_is_a_hub_id(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id(name) and not looks_like_path(name)


def test_org_name_with_a_local_org_folder_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myorg").mkdir()
    assert looks_like_path("myorg/model") and not is_hub_id("myorg/model")


@pytest.mark.parametrize("name", ["models/Wan2.1-1.3B-I2V-Diffusers", "./nothing", "/no/such/folder"])
def test_missing_paths_fail_at_once_without_the_hub(name, hf_env, monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("asked the hub about a path"))
    with pytest.raises(ModelError, match=r"base model folder not found$"):
        resolve_pretrained(name, "base model")


def test_existing_folder_is_returned(tmp_path):
    assert resolve_pretrained(str(tmp_path)) == tmp_path


def test_neither_path_nor_id(hf_env):
    with pytest.raises(ModelError, match="neither a local folder nor a hub id"):
        resolve_pretrained("just-a-name")


# ---------------------------------------------------------------------------- offline


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "HF_ENDPOINT"])
def test_offline_uncached_id_fails_fast_in_one_line(how, hf_env, monkeypatch):
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    start = time.perf_counter()
    with pytest.raises(ModelError) as info:
        resolve_pretrained("some-org/some-model", "base model", file="model_index.json")
    assert time.perf_counter() - start < 3
    message = str(info.value)
    assert "\n" not in message and message.startswith("some-org/some-model: ")
    assert "not in the local cache" in message and "HF_HOME" in message
    assert ("HF_HUB_OFFLINE is set" if how == "HF_HUB_OFFLINE" else f"cannot reach the hub ({UNREACHABLE})") in message


def test_offline_cached_id_loads_from_the_cache(hf_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    snap = fake_cache(hf_env, "some-org/some-model", {"model_index.json": "{}", "transformer/config.json": "{}"})
    assert resolve_pretrained("some-org/some-model", file="model_index.json") == snap
    assert resolve_pretrained("some-org/some-model", file="transformer/config.json") == snap
    with pytest.raises(ModelError, match="not in the local cache"):  # cached without the file asked for
        resolve_pretrained("some-org/some-model", file="config.json")


def test_reachable_hub_keeps_the_id(hf_env, monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    assert resolve_pretrained("some-org/some-model") == "some-org/some-model"


@pytest.mark.parametrize("status, reachable", [(200, True), (401, True), (404, False), (502, False)])
def test_reachability_needs_a_hub_like_answer(status, reachable, hf_env, monkeypatch):
    """A root that 404s (a captive interceptor, a wrong port) is not a hub; one that wants a token is."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub.hub_reachable() is reachable
    finally:
        server.shutdown()


def test_reachability_check_is_bounded_by_its_timeout(hf_env, monkeypatch):
    import socket

    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.perf_counter()
        assert hub.hub_reachable(timeout=0.5) is False
        assert time.perf_counter() - start < 1.5  # the 0.5 s timeout plus 1 s for a busy machine
    finally:
        silent.close()


def test_base_config_reads_the_cached_snapshot_offline(hf_env, monkeypatch):
    from magicmotion.pipelines.loading import base_config, transformer_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_cache(hf_env, "some-org/wan", {"model_index.json": json.dumps({"_class_name": "WanImageToVideoPipeline"}),
                                        "transformer/config.json": json.dumps({"num_layers": 2})})
    assert base_config("some-org/wan")["_class_name"] == "WanImageToVideoPipeline"
    assert transformer_config("some-org/wan") == {"num_layers": 2}


def test_transformer_config_of_a_hub_id_is_its_transformer_folders_config(hf_env, monkeypatch):
    """A base named by hub id, the hub up: transformer/config.json itself (it asked diffusers for
    transformer/model_index.json, which no base has, so every hub base failed to load). The hub's HTTP
    calls are switched off here, so the file comes from our cache as a download would."""
    import huggingface_hub.constants

    from magicmotion.pipelines.loading import transformer_config

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no request leaves this machine
    fake_cache(hf_env, "some-org/wan", {"model_index.json": json.dumps({"_class_name": "WanImageToVideoPipeline"}),
                                        "config.json": json.dumps({"num_layers": 9}),
                                        "transformer/config.json": json.dumps({"num_layers": 2})})
    assert resolve_pretrained("some-org/wan", file="model_index.json") == "some-org/wan"  # fetched, not the cache
    assert transformer_config("some-org/wan") == {"num_layers": 2}
    with pytest.raises(ModelError, match=r"^some-org/other: cannot fetch transformer/config\.json \(.+\)$"):
        transformer_config("some-org/other")


def test_base_config_of_a_hub_id_is_checked_and_names_the_id(hf_env, monkeypatch):
    """A base named by hub id, the hub up: its model_index.json, checked as a local one is (a component
    we do not load is refused naming the id); one the hub does not have is a ModelError naming it."""
    import huggingface_hub.constants

    from magicmotion.pipelines.loading import base_config

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no request leaves this machine
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_env))  # diffusers' default cache
    index = {"_class_name": "WanImageToVideoPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"]}
    fake_cache(hf_env, "some-org/wan", {"model_index.json": json.dumps(index)})
    assert {k: v for k, v in base_config("some-org/wan").items() if not k.startswith("_")} == {
        "scheduler": ["diffusers", "UniPCMultistepScheduler"]}
    fake_cache(hf_env, "some-org/odd", {"model_index.json": json.dumps({**index, "vae": ["mylib", "MyVAE"]})})
    with pytest.raises(ModelError, match=r"^some-org/odd: model_index.json: component 'vae' is 'mylib'.'MyVAE'"):
        base_config("some-org/odd")
    with pytest.raises(ModelError, match=r"^some-org/none: cannot fetch the base model's model_index\.json \(.+\)$"):
        base_config("some-org/none")


def test_every_loader_fails_offline_in_one_line(hf_env, monkeypatch):
    """The base, the ControlNet, the curation models and the bench / app SAM 2 all take the same path."""
    from magicmotion.app.drawing import Sam2Segmenter as AppSam2
    from magicmotion.bench.segmenters import Sam2Segmenter as BenchSam2
    from magicmotion.data.curation.stages import load_objects_model
    from magicmotion.errors import MagicMotionError
    from magicmotion.perception import load_grounder, load_video_tracker
    from magicmotion.pipelines.loading import base_config, load_controlnet
    from magicmotion.training.conditioning import load_base_components

    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a hub id was fetched: nothing may reach the network here")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)  # the ids below are never fetched
    calls = [lambda: base_config("o/base"), lambda: load_controlnet("o/cn", model="wan"),
             lambda: load_objects_model("o/llm", device="cpu"), lambda: load_grounder("o/gd", device="cpu"),
             lambda: load_video_tracker("o/sam2", device="cpu"), lambda: BenchSam2("o/sam2"),
             lambda: AppSam2.from_pretrained("o/sam2"), lambda: load_base_components("o/base", ("scheduler",))]
    for call in calls:  # (the time is in the imports: no hub request is made)
        with pytest.raises(MagicMotionError, match="HF_HUB_OFFLINE is set and o/.* is not in the local cache"):
            call()


def test_training_config_rejects_a_missing_base_folder(tmp_path):
    from magicmotion.errors import ConfigError
    from magicmotion.training.config import load_config

    with pytest.raises(ConfigError, match=r"stage1.yaml: base models/Wan2.1-Fun-1.3B-InP-Diffusers: folder not found"):
        load_config(ROOT / "configs" / "wan-1.3b" / "stage1.yaml")


# ---------------------------------------------------------------------------- the CLI, end to end


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": UNREACHABLE}])
def test_generate_with_an_unreachable_hub_id_exits_2_in_one_line(env, tmp_path):
    run_env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    run_env.update(env, HF_HOME=str(tmp_path / "hf"))
    cmd = [sys.executable, "-m", "magicmotion", "generate", "--base", "some-org/some-model",
           "--controlnet", "some-org/some-controlnet", "--image", "examples/first_frame.png",
           "--trajectory", "examples/trajectory.json", "--kind", "box", "--prompt", "x",
           "--out", str(tmp_path / "v.mp4")]
    out = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("magicmotion: error: some-org/some-model: "), out.stderr
    assert "not in the local cache" in lines[0]
