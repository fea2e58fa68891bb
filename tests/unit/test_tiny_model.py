"""tools/make_tiny_model.py writes a servable, reproducible tiny Qwen3 model."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from safetensors import safe_open
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "make_tiny_model.py"
FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MARKUP = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich."}},
                "required": ["city"],
            },
        },
    }
]


def make(output_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), str(output_dir), *args], capture_output=True, text=True, timeout=120
    )


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def load_json(directory: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / name).read_text())
    return data


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    output_dir = tmp_path_factory.mktemp("tiny") / "tiny-qwen3"
    result = make(output_dir)
    assert result.returncode == 0, result.stderr
    return output_dir, result.stdout


@pytest.fixture(scope="module")
def model_dir(generated: tuple[Path, str]) -> Path:
    return generated[0]


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def render(model_dir: Path, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    # The environment transformers' apply_chat_template compiles chat templates in.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )
    template = env.from_string(load_json(model_dir, "tokenizer_config.json")["chat_template"])
    return template.render(messages=messages, **kwargs)


def test_writes_the_model_files_and_reports_size_and_time(generated: tuple[Path, str]) -> None:
    model_dir, stdout = generated
    assert {p.name for p in model_dir.iterdir()} == FILES
    for name in FILES:
        assert str(model_dir / name) in stdout
    match = re.search(r"(\d+) bytes total", stdout)
    assert match, stdout
    total = int(match.group(1))
    assert total == sum(p.stat().st_size for p in model_dir.iterdir())
    assert total < 2 * 1024 * 1024
    assert re.search(r"took \d+\.\d+ s", stdout)


def test_rerun_is_byte_identical(model_dir: Path, tmp_path: Path) -> None:
    # Another directory, and a re-run over existing output, must both reproduce every byte.
    again = tmp_path / "elsewhere"
    assert make(again).returncode == 0
    assert digests(again) == digests(model_dir)
    assert make(again).returncode == 0
    assert digests(again) == digests(model_dir)


@pytest.mark.parametrize("args", [["--name", "tiny-nemotron"], ["--seed", "1"]], ids=["name", "seed"])
def test_name_and_seed_change_only_the_weights(model_dir: Path, tmp_path: Path, args: list[str]) -> None:
    assert make(tmp_path, *args).returncode == 0
    ours, theirs = digests(model_dir), digests(tmp_path)
    assert ours.pop("model.safetensors") != theirs.pop("model.safetensors")
    assert ours == theirs
    a, b = load_file(model_dir / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert not np.allclose(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])


def test_config_matches_the_tokenizer(model_dir: Path, tokenizer: Tokenizer) -> None:
    config = load_json(model_dir, "config.json")
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["model_type"] == "qwen3"
    # vLLM's CPU attention rejects head_dim 16.
    assert config["head_dim"] == 32
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    assert config["tie_word_embeddings"] is True
    assert config["torch_dtype"] == "float32"
    assert config["max_position_embeddings"] >= 4096
    assert config["vocab_size"] == tokenizer.get_vocab_size()

    tok_config = load_json(model_dir, "tokenizer_config.json")
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["bos_token_id"] == tokenizer.token_to_id(tok_config["bos_token"])
    assert config["eos_token_id"] == tokenizer.token_to_id(tok_config["eos_token"])
    assert tok_config["eos_token"] == "<|im_end|>"
    for token_id, entry in tok_config["added_tokens_decoder"].items():
        assert tokenizer.token_to_id(entry["content"]) == int(token_id)
        # vLLM strips special tokens when detokenizing; the tool parser must still see <tool_call>.
        assert entry["special"] is (entry["content"] in CHATML)
    assert {e["content"] for e in tok_config["added_tokens_decoder"].values()} == set(CHATML + MARKUP)

    generation = load_json(model_dir, "generation_config.json")
    assert generation["bos_token_id"] == config["bos_token_id"]
    assert config["eos_token_id"] in generation["eos_token_id"]
    special_map = load_json(model_dir, "special_tokens_map.json")
    assert special_map["eos_token"] == tok_config["eos_token"]
    assert special_map["bos_token"] == tok_config["bos_token"]


def test_weights_have_qwen3_names_and_shapes(model_dir: Path) -> None:
    config = load_json(model_dir, "config.json")
    hidden, head_dim, inter = config["hidden_size"], config["head_dim"], config["intermediate_size"]
    q_dim, kv_dim = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    expected = {"model.embed_tokens.weight": (config["vocab_size"], hidden), "model.norm.weight": (hidden,)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        expected |= {
            f"{p}.self_attn.q_proj.weight": (q_dim, hidden),
            f"{p}.self_attn.k_proj.weight": (kv_dim, hidden),
            f"{p}.self_attn.v_proj.weight": (kv_dim, hidden),
            f"{p}.self_attn.o_proj.weight": (hidden, q_dim),
            f"{p}.self_attn.q_norm.weight": (head_dim,),
            f"{p}.self_attn.k_norm.weight": (head_dim,),
            f"{p}.mlp.gate_proj.weight": (inter, hidden),
            f"{p}.mlp.up_proj.weight": (inter, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, inter),
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.post_attention_layernorm.weight": (hidden,),
        }
    tensors = load_file(model_dir / "model.safetensors")
    assert {name: t.shape for name, t in tensors.items()} == expected
    assert "lm_head.weight" not in tensors
    for name, tensor in tensors.items():
        assert tensor.dtype == np.float32, name
        if name.endswith("norm.weight"):
            assert np.all(tensor == 1.0), name
        else:
            assert 0.01 < float(tensor.std()) < 0.03, name
    with safe_open(model_dir / "model.safetensors", framework="np") as f:
        assert f.metadata() == {"format": "pt"}


def test_tokenizer_round_trips_text_and_keeps_markers_whole(tokenizer: Tokenizer) -> None:
    text = (
        "<|im_start|>user\nWhat's the weather in Zürich? 🌦 Ünïcödé, tabs\tand  spaces.<|im_end|>\n"
        '<|im_start|>assistant\n<think>\nhmm\n</think>\n\n<tool_call>\n{"name": "get_weather", '
        '"arguments": {"city": "Zürich"}}\n</tool_call><|im_end|>\n<tool_response>\n{"t": 3}\n</tool_response>'
        "<|endoftext|>"
    )
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    for marker in CHATML + MARKUP:
        marker_id = tokenizer.token_to_id(marker)
        assert marker_id is not None, marker
        assert tokenizer.encode(marker).ids == [marker_id]
        assert marker_id in ids
    # Skipping special tokens drops ChatML but keeps the markers vLLM's tool and reasoning parsers read.
    plain = tokenizer.decode(ids, skip_special_tokens=True)
    assert "<|im_start|>" not in plain
    assert "<tool_call>" in plain
    assert "</think>" in plain


def test_chat_template_renders_tools_calls_and_responses(model_dir: Path) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Zürich?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}],
        },
        {"role": "tool", "content": '{"temp_c": 21}'},
        {"role": "tool", "content": '{"wind": "calm"}'},
    ]
    text = render(model_dir, messages, tools=TOOLS, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are terse.\n\n")
    tools_block = text[text.index("<tools>\n") : text.index("\n</tools>")]
    assert json.dumps(TOOLS[0], ensure_ascii=False) in tools_block
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in text
    assert text.count("<|im_start|>system") == 1
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n' in text
    # Consecutive tool results share one user turn.
    assert (
        '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response>\n'
        '<tool_response>\n{"wind": "calm"}\n</tool_response><|im_end|>\n'
    ) in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_without_tools_is_plain_chatml(model_dir: Path) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        # Raw OpenAI messages carry arguments as a JSON string.
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}],
        },
    ]
    text = render(model_dir, messages)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        '<|im_start|>assistant\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        "</tool_call><|im_end|>\n"
    )
    assert "<tools>" not in text
    no_think = render(model_dir, messages[:2], add_generation_prompt=True, enable_thinking=False)
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "bad name!"], "--name"),
        (["--name", ""], "--name"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "x"], "--seed"),
    ],
)
def test_bad_arguments_fail_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = make(tmp_path / "out", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("not a directory")
    result = make(target)
    assert result.returncode != 0
    assert "not a directory" in result.stderr
