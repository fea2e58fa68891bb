"""The stack as users run it (site.yml, cpu-demo): real vLLM x2 behind the real router in one systemd
host, used from outside the host with the official openai SDK; then faults, load and security.

The router publishes 0.0.0.0:8000 in the container; the tests reach it on the container's
address, as a client on the network would.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import openai
import pytest
import testinfra.host

SERVED = {"tiny-qwen": "tiny-qwen3", "tiny-nemotron": "tiny-nemotron"}
PORTS = {"tiny-qwen": 8011, "tiny-nemotron": 8012}
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def base_url(host: testinfra.host.Host) -> str:
    address = host.check_output("hostname -I").split()[0]
    return f"http://{address}:8000"


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def post(base_url: str, body: bytes | dict, path: str = "/v1/chat/completions") -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{base_url}{path}", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def chat_body(model: str, max_tokens: int = 4) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}


def post_direct(host: testinfra.host.Host, port: int) -> int:
    body = json.dumps(chat_body(SERVED["tiny-qwen"]))
    return int(
        host.check_output(
            f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Content-Type: application/json' "
            f"-d '{body}' http://127.0.0.1:{port}/v1/chat/completions"
        )
    )


def unit_pids(host: testinfra.host.Host, key: str) -> set[int]:
    # Every process in the unit's cgroup, children included (EngineCore, workers).
    out = host.check_output(f"systemd-cgls --no-pager -u vllm-{key} | grep -oE '[0-9]+ ' || true")
    return {int(pid) for pid in out.split()}


def alive(host: testinfra.host.Host, pids: set[int]) -> set[int]:
    return {pid for pid in pids if host.run(f"test -d /proc/{pid}").rc == 0}


def main_pid(host: testinfra.host.Host, key: str) -> int:
    return int(host.check_output(f"systemctl show --value -p MainPID vllm-{key}"))


def health(base_url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@contextmanager
def shell_in(host: testinfra.host.Host) -> Iterator[Callable[[str], None]]:
    """A shell kept open in the host: a command written to it runs within milliseconds, where a
    new `podman exec` takes a second or more on a loaded machine."""
    shell = subprocess.Popen(
        ["podman", "exec", "-i", host.backend.name, "sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert shell.stdin and shell.stdout

    def run(command: str) -> None:
        shell.stdin.write(f"{command} && echo done || echo failed\n")
        shell.stdin.flush()
        assert shell.stdout.readline().strip() == "done", command

    try:
        run("true")  # the shell is up before the first command that counts
        yield run
    finally:
        shell.stdin.close()
        shell.wait(timeout=30)


def long_story(client: openai.OpenAI, tokens: int) -> openai.Stream:
    """A stream from tiny-nemotron of exactly `tokens` tokens (ignore_eos), a few seconds long."""
    return client.chat.completions.create(
        model="nemotron",
        messages=[{"role": "user", "content": "Write a long story."}],
        max_tokens=tokens,
        stream=True,
        extra_body={"ignore_eos": True},
    )


def router_status(base_url: str) -> int | None:
    """/health's status, or None while nothing answers on the port (the router is starting)."""
    try:
        return health(base_url)[0]
    except (urllib.error.URLError, ConnectionError):
        return None


def access_log_lines(host: testinfra.host.Host) -> int:
    return int(host.check_output("wc -l < /var/log/llm-router/access.log"))


def access_log_since(host: testinfra.host.Host, mark: int) -> list[dict]:
    host.check_output("sleep 1.5")  # the log is written out every second
    text = host.check_output(f"tail -n +{mark + 1} /var/log/llm-router/access.log")
    return [json.loads(line) for line in text.splitlines()]


def wait_until(predicate, timeout: float, what: str, step: float = 0.5) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f}s"
        time.sleep(step)
    return time.monotonic() - started


@pytest.fixture
def steady_qwen_traffic(base_url: str) -> Iterator[list[int]]:
    """Requests for tiny-qwen, one after another, for the whole test: their statuses."""
    statuses: list[int] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            statuses.append(post(base_url, chat_body("qwen", 2))[0])

    thread = threading.Thread(target=run)
    thread.start()
    yield statuses
    stop.set()
    thread.join()


# -- the stack works ------------------------------------------------------------------------------


def test_models_lists_both_models(client: openai.OpenAI) -> None:
    assert {model.id for model in client.models.list()} == set(SERVED.values())


@pytest.mark.parametrize(("asked", "key"), [("qwen", "tiny-qwen"), ("Nemotron-Nano", "tiny-nemotron")])
def test_model_names_containing_a_route_match_reach_their_backend(client: openai.OpenAI, asked: str, key: str) -> None:
    reply = client.chat.completions.create(model=asked, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert reply.model == SERVED[key]
    assert reply.choices[0].message.content is not None


def test_streaming_chat_with_the_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-qwen3", messages=[{"role": "user", "content": "Count."}], max_tokens=12, stream=True
    )
    chunks = list(stream)
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content) >= 2
    assert chunks[-1].choices[0].finish_reason in {"length", "stop"}


def test_tool_call_with_the_sdk(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    reply = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice="required",
        max_tokens=64,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments), dict)


def test_unknown_model_gets_404_naming_the_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="llama-70b", messages=[{"role": "user", "content": "hi"}])
    assert "tiny-qwen3" in str(raised.value) and "tiny-nemotron" in str(raised.value)


def test_bad_json_gets_400(base_url: str) -> None:
    status, headers, body = post(base_url, b'{"model": "qwen",')
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert body["error"]["code"] == "not_json"


@pytest.mark.parametrize("key", SERVED)
def test_systemctl_status_names_the_model_unit(host: testinfra.host.Host, key: str) -> None:
    status = host.run(f"systemctl status --no-pager vllm-{key}")
    assert status.rc == 0, status.stdout
    assert "Active: active (running)" in status.stdout


# -- security -------------------------------------------------------------------------------------


def test_only_the_router_listens_beyond_loopback(host: testinfra.host.Host) -> None:
    listeners = [line.split()[3] for line in host.check_output("ss -Hltn").splitlines()]
    public = [address for address in listeners if not address.startswith(("127.", "[::1]"))]
    assert public and all(address.endswith(":8000") for address in public), listeners


def test_sandbox_report_of_every_unit(host: testinfra.host.Host) -> None:
    units = [f"vllm-{key}.service" for key in SERVED] + ["llm-router.service"]
    scores = {}
    for unit in units:
        overall = host.check_output(f"systemd-analyze security --no-pager {unit}").splitlines()[-1]
        print(overall)
        scores[unit] = float(overall.split(f"{unit}:")[1].split()[0])
    # systemd rates 0-10; "OK" ends at 4.9. Measured: vLLM units 1.6, router 2.6.
    assert all(score <= 3.0 for score in scores.values()), scores


# -- load -----------------------------------------------------------------------------------------


def test_hundred_concurrent_streams_router_and_direct(host: testinfra.host.Host) -> None:
    script = base64.b64encode((HERE / "load_streams.py").read_bytes()).decode()
    host.check_output(f"echo {script} | base64 -d > /tmp/load_streams.py")
    python = "/opt/vllm/current/bin/python"
    figures = {}
    # Alternating rounds: the machine is noisy, so each side gets a turn twice.
    for round_ in range(2):
        for name, url, model in (
            ("router", "http://127.0.0.1:8000/v1", "qwen"),
            ("direct", f"http://127.0.0.1:{PORTS['tiny-qwen']}/v1", "tiny-qwen3"),
        ):
            result = json.loads(host.check_output(f"{python} /tmp/load_streams.py {url} {model} 100"))
            print(f"round {round_ + 1} {name}: {result}")
            assert result["errors"] == 0, result
            assert result["truncated"] == 0, result
            figures.setdefault(name, []).append(result)
    assert all(result["requests"] == 100 for results in figures.values() for result in results)


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.fault
def test_kill_9_gives_fast_503_keeps_the_other_model_and_comes_back(
    host: testinfra.host.Host, base_url: str, steady_qwen_traffic: list[int]
) -> None:
    key = "tiny-nemotron"
    old = main_pid(host, key)
    before = unit_pids(host, key)
    killed = time.monotonic()
    host.check_output(f"kill -9 {old}")

    def answered_503() -> bool:
        status, headers, body = post(base_url, chat_body("nemotron"))
        return status == 503 and headers.get("Retry-After") is not None and body["error"]["code"] == "backend_not_ready"

    seconds = wait_until(answered_503, 5, "503 with Retry-After after kill -9", step=0.1)
    print(f"kill -9: the router answered 503 after {seconds:.1f}s")
    back = wait_until(lambda: post(base_url, chat_body("nemotron"))[0] == 200, 400, "routed again", step=2)
    print(f"kill -9: {key} answered through the router again {time.monotonic() - killed:.0f}s after the kill")
    assert back > 0
    assert main_pid(host, key) != old
    orphans = alive(host, before)
    assert not orphans, f"processes of the killed unit outlived it: {orphans}"
    assert steady_qwen_traffic and set(steady_qwen_traffic) == {200}, steady_qwen_traffic


@pytest.mark.fault
def test_router_restart_leaves_the_backends_alone(host: testinfra.host.Host, base_url: str) -> None:
    pids = {key: main_pid(host, key) for key in SERVED}
    host.check_output("systemctl stop llm-router")
    assert post_direct(host, PORTS["tiny-qwen"]) == 200
    host.check_output("systemctl start llm-router")
    wait_until(lambda: router_status(base_url) == 200, 15, "router ready after restart")
    assert {key: main_pid(host, key) for key in SERVED} == pids


@pytest.mark.fault
def test_restart_of_every_unit_drains_comes_back_in_order_with_503_until_ready(
    host: testinfra.host.Host, client: openai.OpenAI, base_url: str
) -> None:
    # As after a reboot: vllm.target starts the models one after another (they share a device
    # in this profile's order); the router answers 503 for each until it is ready. A stream open
    # when the stop begins ends whole: the unit drains its server first (vllm-drain).
    before = unit_pids(host, "tiny-qwen") | unit_pids(host, "tiny-nemotron")
    mark = access_log_lines(host)
    stream = iter(long_story(client, 1500))
    next(stream)
    streamed: dict = {}

    def read_the_stream() -> None:
        try:
            streamed["finish"] = [chunk.choices[0].finish_reason for chunk in stream if chunk.choices][-1]
        except (httpx2.HTTPError, openai.APIError) as error:
            streamed["error"] = error
        streamed["ended"] = time.monotonic()

    reader = threading.Thread(target=read_the_stream)
    reader.start()
    restarted = time.monotonic()
    host.check_output("systemctl restart --no-block vllm.target")
    seen: dict[str, list[int]] = {key: [] for key in SERVED}
    started = time.monotonic()

    def all_back() -> bool:
        for key in SERVED:
            status = post(base_url, chat_body(SERVED[key]))[0]
            if not seen[key] or seen[key][-1] != status:
                seen[key].append(status)
        # Back means 503 (stopped or starting) and then 200: the stop starts after the drain's
        # first call, so a first round can still find both models answering.
        return all(503 in statuses and statuses[-1] == 200 for statuses in seen.values())

    wait_until(all_back, 600, "both models back through the router", step=1)
    print(f"restart of vllm.target: both models answered again after {time.monotonic() - started:.0f}s: {seen}")
    reader.join(timeout=60)
    assert not alive(host, before), "processes of the stopped units outlived them"
    assert streamed.get("finish") == "length", streamed
    drained = host.check_output("journalctl -u vllm-tiny-nemotron -o cat --no-pager | grep ' drained by ' | tail -1")
    print(f"restart of vllm.target: the open stream ended {streamed['ended'] - restarted:.1f}s after it; {drained}")
    assert drained and streamed["ended"] > restarted
    for key, statuses in seen.items():
        # Drained first, a model is "not ready" (503) until it answers again: no request of the
        # restart is cut short or reaches a stopping server (vLLM would answer 500).
        assert 503 in statuses and statuses[-1] == 200, (key, statuses)
        assert set(statuses) == {200, 503}, (key, statuses, access_log_since(host, mark))
    first_ready = int(host.check_output("systemctl show --value -p ActiveEnterTimestampMonotonic vllm-tiny-qwen"))
    second_started = int(
        host.check_output("systemctl show --value -p ExecMainStartTimestampMonotonic vllm-tiny-nemotron")
    )
    assert second_started >= first_ready


@pytest.mark.fault
def test_hung_backend_is_marked_down_and_its_stream_ends_with_an_error(
    host: testinfra.host.Host, client: openai.OpenAI, base_url: str
) -> None:
    key = "tiny-nemotron"
    pid = main_pid(host, key)
    # The shell is opened before the request and the signal follows the first event at once: the
    # tiny model writes its whole answer within seconds, and a stream already in the socket buffers
    # would end normally (CI saw that when the shell was opened after the request).
    with shell_in(host) as shell:
        chunks = iter(long_story(client, 1800))
        next(chunks)
        shell(f"kill -STOP {pid}")
    frozen = time.monotonic()
    try:
        # router_health_fails (3) probes must time out in a row first: 3 x (interval + timeout) = 6 s.
        marked = wait_until(lambda: health(base_url)[1]["models"][key] == "down", 20, "hung backend marked down")
        print(f"SIGSTOP: marked down after {marked:.1f}s")
        assert post(base_url, chat_body("nemotron"))[0] == 503
        with pytest.raises((httpx2.HTTPError, openai.APIError)) as raised:
            for _ in chunks:
                pass
        print(
            f"SIGSTOP: the open stream ended after {time.monotonic() - frozen:.0f}s with {type(raised.value).__name__}"
        )
        assert time.monotonic() - frozen < 60
    finally:
        host.check_output(f"kill -CONT {pid}")
    wait_until(lambda: health(base_url)[0] == 200, 60, "backend ready again after SIGCONT")
