"""Model weights on a real host after converge, idempotence and the fault side effects."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import testinfra.host

WEIGHTS = "/root/model_weights/llm-serving"
TINY = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "tiny-models"
FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.mark.parametrize(("name", "source"), [("tiny-qwen3", "local"), ("tiny-nemotron", "url")])
def test_model_is_complete_and_identical_to_the_source(host: testinfra.host.Host, name: str, source: str) -> None:
    model_dir = f"{WEIGHTS}/{name}"
    manifest = json.loads(host.file(f"{model_dir}/.llm-serving-manifest.json").content_string)
    assert manifest["identity"]["source"] == source
    assert manifest["identity"]["repo"] == f"llm-serving/{name}"
    assert sorted(manifest["files"]) == FILES
    for file in FILES:
        local = (TINY / name / file).read_bytes()
        remote = host.file(f"{model_dir}/{file}")
        assert remote.size == manifest["files"][file] == len(local)
        assert remote.sha256sum == hashlib.sha256(local).hexdigest(), file


def test_url_manifest_records_the_archive_checksum(host: testinfra.host.Host) -> None:
    manifest = json.loads(host.file(f"{WEIGHTS}/tiny-nemotron/.llm-serving-manifest.json").content_string)
    assert manifest["identity"]["sha256"] == (TINY / "tiny-nemotron.tar.gz.sha256").read_text().strip()
    assert manifest["identity"]["url"] == "http://127.0.0.1:8999/tiny-nemotron.tar.gz"


def test_no_download_leftovers(host: testinfra.host.Host) -> None:
    assert host.run(f"find {WEIGHTS} -name '*.incomplete'").stdout == ""


def test_service_user_reads_the_weights(host: testinfra.host.Host) -> None:
    for name in ("tiny-qwen3", "tiny-nemotron"):
        result = host.run(f"runuser -u vllm -- head -c 8 {WEIGHTS}/{name}/model.safetensors")
        assert result.rc == 0, result.stderr
        assert len(result.stdout_bytes) == 8
