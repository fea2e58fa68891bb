"""The model_weights role's Hub script (roles/model_weights/files/hf_weights.py) with the real
huggingface_hub client of this environment, against a LOCAL STAND-IN for the Hugging Face Hub
(tests/fake_hub/server.py, in a thread): the Hub itself is unreachable from the test machines.
The same script runs against the same stand-in with the role's pinned client in the weights_hf
Molecule scenario."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles/model_weights/files/hf_weights.py"
ALLOW = ["*.safetensors", "*.json", "tokenizer*", "*.jinja", "*.py", "*.txt", "*.model"]
IGNORE = ["*.bin", "*.pth", "*.pt", "original/*", "consolidated*"]
TOKEN = "hf_unit_test_token"
WEIGHTS = b"\x01" * 300_000


def load_server() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_hub_server", ROOT / "tests/fake_hub/server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_commit(server: ModuleType, root: Path, src: Path, repo: str, ref: str = "main", gated: bool = False) -> str:
    flags = ["--gated"] if gated else []
    result = subprocess.run(
        [sys.executable, server.__file__, "fixture", str(src), str(root), repo, "--ref", ref, *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[dict]:
    server = load_server()
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "qwen3"}')
    (src / "tokenizer.json").write_text('{"version": "1.0"}' + " " * 5000)
    (src / "chat_template.jinja").write_text("{{ messages }}")
    (src / "model.safetensors").write_bytes(WEIGHTS)
    (src / "pytorch_model.bin").write_bytes(b"duplicate")
    root = tmp_path / "hub"
    commit = add_commit(server, root, src, "org/tiny")
    v2 = tmp_path / "v2"
    v2.mkdir()
    for file in src.iterdir():
        (v2 / file.name).write_bytes(file.read_bytes())
    (v2 / "config.json").write_text('{"model_type": "qwen3", "revision": 2}')
    commit_v2 = add_commit(server, root, v2, "org/tiny", ref="v2")
    add_commit(server, root, src, "org/gated", gated=True)
    token_file = tmp_path / "server-token"
    token_file.write_text(TOKEN)
    log = tmp_path / "requests.jsonl"
    server.Handler.hub = server.Hub(root, TOKEN, 0, log)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client_token = tmp_path / "client-token"
    client_token.write_text(TOKEN)
    client_token.chmod(0o600)
    yield {
        "server": server,
        "endpoint": f"http://127.0.0.1:{httpd.server_address[1]}",
        "commit": commit,
        "commit_v2": commit_v2,
        "src": src,
        "log": log,
        "token_file": client_token,
        "dir": tmp_path / "weights",
    }
    httpd.shutdown()


# The stand-in runs in a thread of this test process; on a loaded machine (the vLLM scenarios beside)
# it can take longer to answer than huggingface_hub's 10 s default, so the tests wait as the role does.
CLIENT_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HOME": "/nonexistent",
    "HF_HUB_ETAG_TIMEOUT": "60",
    "HF_HUB_DOWNLOAD_TIMEOUT": "60",
}


def run(hub: dict, *args: str, token: bool = False) -> tuple[int, dict]:
    env = {**os.environ, **CLIENT_ENV}
    command = [sys.executable, str(SCRIPT), args[0], "--dir", str(hub["dir"]), "--endpoint", hub["endpoint"]]
    if args[0] != "progress":
        command += ["--allow-patterns", json.dumps(ALLOW), "--ignore-patterns", json.dumps(IGNORE)]
    else:
        command = command[:-2]
    if token:
        command += ["--token-file", str(hub["token_file"])]
    result = subprocess.run([*command, *args[1:]], capture_output=True, text=True, env=env, check=False)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def fetch(hub: dict, repo: str = "org/tiny", revision: str = "main", token: bool = False) -> tuple[int, dict]:
    return run(hub, "fetch", "--key", "tiny", "--repo", repo, "--revision", revision, token=token)


def probe(hub: dict, *models: dict, token: bool = False) -> dict:
    code, result = run(hub, "probe", "--models", json.dumps(list(models)), token=token)
    assert code == 0
    return result


def sent(hub: dict, since: int = 0) -> list[str]:
    """The files the stand-in sent in full, after the first `since` requests."""
    entries = [json.loads(line) for line in hub["log"].read_text().splitlines()[since:]]
    return sorted(
        Path(e["path"]).name
        for e in entries
        if e["method"] == "GET" and "/resolve/" in e["path"] and e["status"] == 200
    )


def requests(hub: dict) -> int:
    return len(hub["log"].read_text().splitlines()) if hub["log"].exists() else 0


def test_probe_reports_the_selected_files_and_what_is_missing(hub: dict) -> None:
    result = probe(hub, {"key": "tiny", "repo": "org/tiny", "revision": hub["commit"]})
    assert result["problems"] == []
    model = result["models"]["tiny"]
    assert model["commit"] == hub["commit"]
    assert sorted(model["files"]) == ["chat_template.jinja", "config.json", "model.safetensors", "tokenizer.json"]
    assert model["files"]["model.safetensors"] == len(WEIGHTS)
    assert model["missing_bytes"] == model["total_bytes"] == sum(model["files"].values())


def test_probe_explains_each_refusal(hub: dict) -> None:
    result = probe(
        hub,
        {"key": "gated", "repo": "org/gated", "revision": "main"},
        {"key": "unknown", "repo": "org/nope", "revision": "main"},
        {"key": "revision", "repo": "org/tiny", "revision": "f" * 40},
        {"key": "patterns", "repo": "org/tiny", "revision": "main", "allow_patterns": ["*.gguf"]},
    )
    assert result["models"] == {}
    gated, unknown, revision, patterns = result["problems"]
    assert "org/gated is a gated repository and model_weights_hf_token is empty" in gated
    assert "Accept its licence at https://huggingface.co/org/gated" in gated
    assert f"the repository org/nope does not exist on {hub['endpoint']}" in unknown
    assert f"org/tiny has no revision '{'f' * 40}'" in revision
    assert "no file of org/tiny@main matches allow_patterns ['*.gguf']" in patterns


def test_gated_repository_with_the_token(hub: dict) -> None:
    result = probe(hub, {"key": "gated", "repo": "org/gated", "revision": "main"}, token=True)
    assert result["problems"] == []
    assert result["models"]["gated"]["gated"] is True
    code, fetched = fetch(hub, repo="org/gated", token=True)
    assert code == 0, fetched
    assert TOKEN not in json.dumps(fetched)


def test_refused_token_names_the_token_and_the_page(hub: dict) -> None:
    hub["token_file"].write_text("hf_wrong")
    result = probe(hub, {"key": "gated", "repo": "org/gated", "revision": "main"}, token=True)
    assert "refused model_weights_hf_token (invalid or expired)" in result["problems"][0]
    assert "https://huggingface.co/org/gated" in result["problems"][0]


def test_fetch_writes_the_selected_files_only(hub: dict) -> None:
    code, result = fetch(hub, revision=hub["commit"])
    assert code == 0, result
    model_dir = hub["dir"] / "org/tiny"
    assert result["downloaded"] == sorted(result["files"])
    assert not (model_dir / "pytorch_model.bin").exists()
    for name in result["files"]:
        assert (model_dir / name).read_bytes() == (hub["src"] / name).read_bytes(), name


def test_refetch_moves_only_what_is_missing_short_or_changed(hub: dict) -> None:
    fetch(hub, revision=hub["commit"])
    model_dir = hub["dir"] / "org/tiny"
    (model_dir / "config.json").unlink()
    (model_dir / "tokenizer.json").write_text("short")
    (model_dir / "stale.safetensors").write_bytes(b"an older revision's shard")
    mark = requests(hub)
    code, result = fetch(hub, revision=hub["commit"])
    assert code == 0, result
    assert sent(hub, mark) == ["config.json", "tokenizer.json"]
    assert result["removed"] == ["stale.safetensors"]
    assert (model_dir / "tokenizer.json").stat().st_size == (hub["src"] / "tokenizer.json").stat().st_size

    mark = requests(hub)
    code, result = fetch(hub, revision="v2")
    assert code == 0, result
    assert result["commit"] == hub["commit_v2"]
    assert sent(hub, mark) == ["config.json"]
    assert json.loads((model_dir / "config.json").read_text())["revision"] == 2


def test_a_killed_fetch_continues_with_the_files_it_missed(hub: dict) -> None:
    stall = hub["dir"].parent / "stall"
    stall.write_text("model.safetensors")
    hub["server"].Handler.hub.stall_file = stall
    env = {**os.environ, **CLIENT_ENV}
    command = [sys.executable, str(SCRIPT), "fetch", "--dir", str(hub["dir"]), "--endpoint", hub["endpoint"]]
    command += ["--allow-patterns", json.dumps(ALLOW), "--ignore-patterns", json.dumps(IGNORE)]
    process = subprocess.Popen([*command, "--key", "tiny", "--repo", "org/tiny", "--revision", "main"], env=env)
    model_dir = hub["dir"] / "org/tiny"
    deadline = time.monotonic() + 120
    while (
        not list(model_dir.glob(".cache/huggingface/download/*.incomplete")) or not (model_dir / "config.json").exists()
    ):
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.05)
    code, progress = run(hub, "progress", "--repo", "org/tiny", "--total", str(len(WEIGHTS) + 6000), "--wait", "1")
    assert code == 0
    assert progress["summary"].endswith("/s") and " of " in progress["summary"]
    process.kill()
    process.wait()
    assert not (model_dir / "model.safetensors").exists()
    stall.unlink()
    mark = requests(hub)
    code, result = fetch(hub)
    assert code == 0, result
    assert sent(hub, mark) == ["model.safetensors"]
    assert result["downloaded"] == ["model.safetensors"]
    assert not list(model_dir.rglob("*.incomplete"))


def test_manifest_leaves_out_the_hub_bookkeeping(hub: dict) -> None:
    spec = importlib.util.spec_from_file_location(
        "weights_manifest", ROOT / "roles/model_weights/library/weights_manifest.py"
    )
    assert spec and spec.loader
    manifest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(manifest)
    fetch(hub)
    files = manifest.files_below(hub["dir"] / "org/tiny")
    assert sorted(files) == ["chat_template.jinja", "config.json", "model.safetensors", "tokenizer.json"]
