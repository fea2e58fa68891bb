#!/usr/bin/env python3
"""Write a tiny random Qwen3 causal LM that vLLM can serve, without downloading anything.

tools/make_tiny_model.py OUTPUT_DIR [--name tiny-qwen3] [--seed 0]

OUTPUT_DIR receives config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json and special_tokens_map.json (about 600 KB). The weights are random, so the
model talks nonsense; it exists so that the serving stack (vLLM units, router, tool-call parsing)
can be exercised on machines without a GPU or network access.

Re-running with the same --name and --seed writes byte-identical files. The weights are seeded from
both, so two backends generated with different names answer differently; the tokenizer depends on
neither, so all tiny models share it.

Needs numpy, safetensors and tokenizers only: no torch, no transformers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import numpy as np
    from safetensors.numpy import save_file
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"make_tiny_model.py: missing dependency ({exc}); pip install numpy safetensors tokenizers")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Sizes: head_dim 32 because vLLM's CPU attention backend rejects 16 at the first request;
# vocab 768 (a multiple of 64, which vLLM pads embeddings to anyway) keeps the file near 600 KB.
VOCAB_SIZE = 768
HIDDEN_SIZE = 64
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
HEAD_DIM = 32
INTERMEDIATE_SIZE = 128
MAX_POSITIONS = 8192
INIT_STD = 0.02

# Qwen's id order: the ChatML control tokens first, then the tool and reasoning markers.
CONTROL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# special=False as in Qwen's own tokenizer: vLLM detokenizes with skip_special_tokens, and the hermes
# tool parser and qwen3 reasoning parser must still see these markers in the text.
MARKUP_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Qwen2/Qwen3's pre-tokenizer split, so text is chunked the way the real models chunk it.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)

# ChatML as Qwen2.5/Qwen3 render it. Content may arrive as a string, None, or a list of {"type": "text"}
# parts; tool-call arguments as a dict (vLLM parses them) or a JSON string (raw OpenAI messages).
CHAT_TEMPLATE = (
    r"""{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is iterable and content is not mapping -%}
        {%- for part in content -%}
            {%- if part is mapping and part.type == 'text' -%}
                {{- part.text -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages and messages[0].role == 'system' %}
        {{- render_content(messages[0].content) + '\n\n' }}
    {%- endif %}
    {{- """
    + json.dumps(TOOLS_PREAMBLE)
    + r""" }}
    {%- for tool in tools %}
        {{- '\n' }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- """
    + json.dumps(TOOLS_POSTAMBLE)
    + r""" }}
    {{- '<|im_end|>\n' }}
{%- elif messages and messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + render_content(messages[0].content) + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + render_content(message.content) + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' + render_content(message.content) }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if tool_call.function is defined %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {%- if not loop.first or render_content(message.content) %}
                    {{- '\n' }}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + render_content(message.content) + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""
)


# --- tokenizer -----------------------------------------------------------------------------------

_SUBJECTS = ["the model", "a user", "the router", "this server", "the agent", "our team", "the client", "it"]
_VERBS = ["returns", "sends", "reads", "writes", "checks", "calls", "loads", "serves", "needs", "finds"]
_OBJECTS = ["the weather", "a request", "the answer", "some tokens", "the file", "a function", "the result", "data"]
_TAILS = ["today.", "again.", "for you.", "in a second.", "as JSON.", "without errors.", "on the GPU.", "now."]
_CITIES = ["Paris", "London", "Tokyo", "Berlin", "New York", "Madrid", "Sydney", "Toronto", "Oslo", "Lima"]
_TOOL_NAMES = ["get_weather", "search_web", "read_file", "run_query", "send_email", "get_time", "add", "lookup"]
_PARAMS = ["city", "query", "path", "sql", "to", "subject", "timezone", "a", "b", "unit", "limit", "id"]
_TYPES = ["string", "integer", "number", "boolean"]
_IDENTS = ["value", "items", "result", "count", "name", "total", "index", "text", "config", "response"]
# Common English words for free-form prose, so the vocabulary is not all tool-call JSON.
_PROSE = (
    "about after all also and answer any because before between both but can could day each even every first "
    "from give good great have help here how into just know language large like long look make many more most "
    "must never new number only other over people please question right said same should small some something "
    "still such system take than thank that their them then there these they thing think this those through "
    "time under until very want water way well were what when where which while will with without word work "
    "world would write year you your"
)
_WORDS = _PROSE.split()
_QUESTIONS = [
    "What is the weather in {city}?",
    "Can you find the time in {city}, please?",
    "How many tokens are in this text?",
    "Please call the {tool} function.",
    "Tell me a short story about {city}.",
    "Why is the sky blue?",
    "Write a Python function that adds two numbers.",
]


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}".capitalize()


def _tool_schema(rng: random.Random, name: str) -> dict[str, Any]:
    params = rng.sample(_PARAMS, rng.randint(1, 3))
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": _sentence(rng),
            "parameters": {
                "type": "object",
                "properties": {p: {"type": rng.choice(_TYPES), "description": f"The {p}."} for p in params},
                "required": params[:1],
            },
        },
    }


def _arguments(rng: random.Random) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for param in rng.sample(_PARAMS, rng.randint(1, 3)):
        args[param] = rng.choice([rng.choice(_CITIES), rng.randint(0, 999), rng.random() < 0.5, rng.choice(_IDENTS)])
    return args


def _code(rng: random.Random) -> str:
    func, arg, var = rng.choice(_TOOL_NAMES), rng.choice(_PARAMS), rng.choice(_IDENTS)
    return (
        f"def {func}({arg}: str) -> dict:\n"
        f'    """{_sentence(rng)}"""\n'
        f"    {var} = {{}}\n"
        f"    for i in range({rng.randint(1, 99)}):\n"
        f"        {var}[str(i)] = {arg}\n"
        f"    return {var}\n"
    )


def corpus() -> Iterator[str]:
    """Yield the training text: fixed seed, fixed order, independent of --name and --seed."""
    # The seed is a constant so every tiny model gets the same tokenizer.
    rng = random.Random(20240601)
    yield TOOLS_PREAMBLE + TOOLS_POSTAMBLE
    for _ in range(3000):
        city, tool = rng.choice(_CITIES), rng.choice(_TOOL_NAMES)
        kind = rng.randrange(7)
        if kind == 0:
            yield " ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))
        elif kind == 6:
            yield " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 30))).capitalize() + rng.choice(".?!")
        elif kind == 1:
            yield rng.choice(_QUESTIONS).format(city=city, tool=tool)
        elif kind == 2:
            yield json.dumps({"name": tool, "arguments": _arguments(rng)})
        elif kind == 3:
            yield json.dumps(_tool_schema(rng, tool))
        elif kind == 4:
            yield _code(rng)
        else:
            yield f"system\nuser\n{city} is {rng.randint(-20, 40)} degrees.\nassistant\n{_sentence(rng)}\ntool\n"


def build_tokenizer() -> Tokenizer:
    # tokenizers reads this whenever it is about to parallelise; serial training rules out thread
    # scheduling as a source of run-to-run differences, and the corpus is small enough not to care.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trained_size = VOCAB_SIZE - len(CONTROL_TOKENS) - len(MARKUP_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=trained_size,
        min_frequency=2,
        show_progress=False,
        # All 256 bytes, so any input text (emoji, other scripts) still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    if tokenizer.get_vocab_size() != trained_size:
        raise RuntimeError(f"BPE training produced {tokenizer.get_vocab_size()} tokens, wanted {trained_size}")
    # Added after training so they take the ids after the learned vocabulary, as in Qwen.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CONTROL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} tokens, wanted {VOCAB_SIZE}")
    return tokenizer


def tokenizer_config(tokenizer: Tokenizer) -> dict[str, Any]:
    decoder: dict[str, dict[str, Any]] = {}
    for token in CONTROL_TOKENS + MARKUP_TOKENS:
        decoder[str(tokenizer.token_to_id(token))] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": token in CONTROL_TOKENS,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": BOS_TOKEN,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": MAX_POSITIONS,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


# --- model ---------------------------------------------------------------------------------------


def model_config(tokenizer: Tokenizer) -> dict[str, Any]:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": tokenizer.token_to_id(BOS_TOKEN),
        "eos_token_id": tokenizer.token_to_id(EOS_TOKEN),
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN_SIZE,
        "initializer_range": INIT_STD,
        "intermediate_size": INTERMEDIATE_SIZE,
        "max_position_embeddings": MAX_POSITIONS,
        "max_window_layers": NUM_LAYERS,
        "model_type": "qwen3",
        "num_attention_heads": NUM_HEADS,
        "num_hidden_layers": NUM_LAYERS,
        "num_key_value_heads": NUM_KV_HEADS,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        # numpy has no bfloat16; float32 is also what vLLM's CPU backend computes in.
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": tokenizer.get_vocab_size(),
    }


def tensor_shapes(vocab_size: int) -> dict[str, tuple[int, ...]]:
    """HF Qwen3 parameter names and shapes; no lm_head because the embeddings are tied."""
    q_dim, kv_dim = NUM_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, HIDDEN_SIZE)}
    for i in range(NUM_LAYERS):
        prefix = f"model.layers.{i}"
        shapes |= {
            f"{prefix}.input_layernorm.weight": (HIDDEN_SIZE,),
            f"{prefix}.self_attn.q_proj.weight": (q_dim, HIDDEN_SIZE),
            f"{prefix}.self_attn.k_proj.weight": (kv_dim, HIDDEN_SIZE),
            f"{prefix}.self_attn.v_proj.weight": (kv_dim, HIDDEN_SIZE),
            f"{prefix}.self_attn.o_proj.weight": (HIDDEN_SIZE, q_dim),
            f"{prefix}.self_attn.q_norm.weight": (HEAD_DIM,),
            f"{prefix}.self_attn.k_norm.weight": (HEAD_DIM,),
            f"{prefix}.post_attention_layernorm.weight": (HIDDEN_SIZE,),
            f"{prefix}.mlp.gate_proj.weight": (INTERMEDIATE_SIZE, HIDDEN_SIZE),
            f"{prefix}.mlp.up_proj.weight": (INTERMEDIATE_SIZE, HIDDEN_SIZE),
            f"{prefix}.mlp.down_proj.weight": (HIDDEN_SIZE, INTERMEDIATE_SIZE),
        }
    shapes["model.norm.weight"] = (HIDDEN_SIZE,)
    return shapes


def weight_seed(name: str, seed: int) -> int:
    # Hashing rather than adding keeps (name, seed) pairs from colliding, e.g. seed 1 of one name
    # with seed 0 of another.
    digest = hashlib.sha256(f"{name}\0{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def build_weights(vocab_size: int, name: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(weight_seed(name, seed))
    weights: dict[str, np.ndarray] = {}
    # Drawn in the fixed order of tensor_shapes, so each tensor's values depend only on name and seed.
    for key, shape in tensor_shapes(vocab_size).items():
        if key.endswith("norm.weight"):
            weights[key] = np.ones(shape, dtype=np.float32)
        else:
            weights[key] = rng.normal(0.0, INIT_STD, size=shape).astype(np.float32)
    return weights


# --- output --------------------------------------------------------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(output_dir: Path, name: str, seed: int) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = model_config(tokenizer)
    written: list[Path] = []

    path = output_dir / "tokenizer.json"
    tokenizer.save(str(path), pretty=True)
    written.append(path)

    json_files: dict[str, dict[str, Any]] = {
        "config.json": config,
        "generation_config.json": {
            "bos_token_id": config["bos_token_id"],
            # Stop at the end of a chat turn, or of a plain completion.
            "eos_token_id": [config["eos_token_id"], tokenizer.token_to_id("<|endoftext|>")],
            "pad_token_id": tokenizer.token_to_id(PAD_TOKEN),
        },
        "tokenizer_config.json": tokenizer_config(tokenizer),
        "special_tokens_map.json": {
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
        },
    }
    for filename, data in json_files.items():
        path = output_dir / filename
        write_json(path, data)
        written.append(path)

    path = output_dir / "model.safetensors"
    # "format": "pt" is what transformers checks before it trusts a safetensors file.
    save_file(build_weights(config["vocab_size"], name, seed), str(path), metadata={"format": "pt"})
    written.append(path)
    return sorted(written)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write a tiny random Qwen3 model that vLLM can serve.")
    parser.add_argument("output_dir", type=Path, help="directory to write the model into (created if missing)")
    parser.add_argument("--name", default="tiny-qwen3", help="model name; seeds the weights (default: tiny-qwen3)")
    parser.add_argument("--seed", type=int, default=0, help="non-negative integer; seeds the weights (default: 0)")
    args = parser.parse_args(argv)
    if not NAME_RE.match(args.name):
        parser.error(f"--name {args.name!r}: use 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    if args.seed < 0:
        parser.error(f"--seed {args.seed}: must be >= 0")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"{args.output_dir}: exists and is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        written = generate(args.output_dir, args.name, args.seed)
    except (OSError, RuntimeError) as exc:
        print(f"make_tiny_model.py: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    total = 0
    for path in written:
        size = path.stat().st_size
        total += size
        print(f"wrote {path} ({size} bytes)")
    print(f"{args.name} (seed {args.seed}): {len(written)} files, {total} bytes total ({total / 1024:.0f} KiB)")
    print(f"took {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
