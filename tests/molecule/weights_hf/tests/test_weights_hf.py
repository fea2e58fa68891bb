"""The hf source after converge, idempotence and the fault side effects, against a LOCAL STAND-IN
for the Hugging Face Hub (tests/fake_hub/server.py inside the host): the real Hub is unreachable
from the test machines, the huggingface_hub client is the real one the role installs."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import testinfra.host

WEIGHTS = "/root/model_weights/llm-serving"
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
TINY = EPHEMERAL / "tiny-models"
# The token molecule.yml gives the role (and the stand-in accepts); it must never be shown.
TOKEN = "hf_LocalStandInToken7Qx2Vm9Lp4"
FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.mark.parametrize(("name", "revision"), [("tiny-qwen3", "commit"), ("tiny-nemotron", "main")])
def test_model_is_complete_and_identical_to_the_hub_files(host: testinfra.host.Host, name: str, revision: str) -> None:
    model_dir = f"{WEIGHTS}/{name}"
    manifest = json.loads(host.file(f"{model_dir}/.llm-serving-manifest.json").content_string)
    wanted = (EPHEMERAL / "fake-hub" / "tiny-qwen3.main").read_text().strip() if revision == "commit" else revision
    assert manifest["identity"] == {"source": "hf", "repo": f"llm-serving/{name}", "revision": wanted}
    assert sorted(manifest["files"]) == FILES
    for file in FILES:
        local = (TINY / name / file).read_bytes()
        remote = host.file(f"{model_dir}/{file}")
        assert remote.size == manifest["files"][file] == len(local)
        assert remote.sha256sum == hashlib.sha256(local).hexdigest(), file


def test_no_partial_downloads_left(host: testinfra.host.Host) -> None:
    assert host.run(f"find {WEIGHTS} /root/weights-faults -name '*.incomplete'").stdout == ""


def test_service_user_reads_the_weights(host: testinfra.host.Host) -> None:
    for name in ("tiny-qwen3", "tiny-nemotron"):
        result = host.run(f"runuser -u vllm -- head -c 8 {WEIGHTS}/{name}/model.safetensors")
        assert result.rc == 0, result.stderr
        assert len(result.stdout_bytes) == 8


def test_the_pinned_client_is_installed(host: testinfra.host.Host) -> None:
    result = host.run(
        "/opt/llm-serving/hf-venv/bin/python -c 'import huggingface_hub, hf_xet; print(huggingface_hub.__version__)'"
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "2.4.0"


def test_gated_model_was_fetched_with_the_token(host: testinfra.host.Host) -> None:
    log = [json.loads(line) for line in host.file("/var/log/fake-hub.jsonl").content_string.splitlines()]
    gated = [entry for entry in log if entry["path"].startswith("/llm-serving/tiny-nemotron/resolve/")]
    assert gated and any(entry["status"] == 200 and entry["authorized"] for entry in gated)


def test_token_never_in_the_ansible_output() -> None:
    output = (EPHEMERAL / "ansible.log").read_text()
    assert "Re-run over 2 complete hf models took" in output  # the log holds the plays' output
    assert TOKEN not in output


def test_progress_was_printed() -> None:
    output = (EPHEMERAL / "ansible.log").read_text()
    assert " of 639.27 KB on disk (" in output


def test_token_left_nowhere_on_the_host(host: testinfra.host.Host) -> None:
    # /etc/fake-hub-token is the stand-in's own copy; everything the role touched is searched.
    found = host.run(f"grep -rl -- {TOKEN} /tmp /root /opt/llm-serving /var/log /run 2>/dev/null")
    assert found.stdout == ""
    assert host.run("find /tmp -maxdepth 1 -name '*.hf'").stdout == ""
