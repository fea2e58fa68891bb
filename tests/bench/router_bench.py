"""Benchmark of the model router (roles/router) against plain nginx, LiteLLM and vllm-router.

Not a pytest test: run it by hand, on a quiet machine, as

    .venv/bin/python tests/bench/router_bench.py [--rounds N] [--duration S] [--skip litellm,vllm-router]

Every target proxies to the same fast fake upstream (nginx + Lua, no Python): the upstream itself
(`direct`), plain nginx `proxy_pass` (the floor for any nginx router), this router rendered from
the role by `running_router`, LiteLLM's proxy and the Rust vllm-router (each installed into its
own venv under .cache/bench/). Rounds alternate the targets; the tables give medians across rounds
and per-round ratios. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from router_fixture import free_port, router_root, running_router, tool_environment, wait_for_port  # noqa: E402

NGINX = "/usr/sbin/nginx"
LUA_MODULES = (
    "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
    "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n"
)
CACHE = ROOT / ".cache" / "bench"
MODEL = "tiny-qwen3"
CHAT = "/v1/chat/completions"
STREAM_GAP_S = 0.002  # between two SSE chunks of the fake upstream (the first one goes out at once)
LITELLM_MAX_S = 3  # LiteLLM does ~50-100 req/s: its wrk runs are kept short

# The issue's goals: (label, key of the measured value, comparison, goal).
GOALS = (
    ("router req/s ÷ plain nginx req/s", "router_vs_plain_rps", ">=", 0.9),
    ("router 1-conn p50 - plain nginx (µs)", "router_minus_plain_1conn_us", "<=", 15.0),
    ("router req/s ÷ LiteLLM req/s", "router_vs_litellm_rps", ">=", 100.0),
    ("router req/s ÷ vllm-router req/s", "router_vs_vllm_router_rps", ">=", 3.0),
    ("router SSE TTFE p50 - direct (ms)", "router_minus_direct_ttfe_ms", "<=", 1.0),
    # Worker time: the server's CPU for one 20 MB request, over what plain nginx spends on the same
    # request (reading it, spilling it to a temporary file, sending it on).
    ("router 20 MB body CPU - plain nginx (ms)", "router_minus_plain_big_cpu_ms", "<=", 15.0),
)


class Skipped(Exception):
    """A target that could not be installed or started: reported, never faked."""


# --------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------


def chat_body(stream: bool = False) -> bytes:
    """A ~1 KB chat request, keys in the order the openai SDK sends them (model after messages)."""
    filler = (
        "Summarise the following notes for an operator in three short bullet points. "
        "The router sits in front of several vLLM backends and picks one from the model field. "
    )
    text = (filler * 8)[:760]
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text},
        ],
        "model": MODEL,
        "max_tokens": 16,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def big_body(megabytes: int = 20) -> bytes:
    """An image request: ~20 MB of base64 before the top-level "model"."""
    payload = base64.b64encode(os.urandom(megabytes * 1024 * 1024 * 3 // 4))
    return (
        b'{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,'
        + payload
        + b'"}}]}],"model":"'
        + MODEL.encode()
        + b'"}'
    )


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End a process started with start_new_session=True, and whatever it forked."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Children (uvicorn workers, nginx workers) that outlived their leader.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def started(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, http.client.HTTPException):
        return 0, b""


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, http.client.HTTPException) as err:
        return 0, str(err).encode()


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Skipped(f"{what}: the process exited with {proc.returncode}")
        if check():
            return
        time.sleep(0.2)
    raise Skipped(f"{what}: not ready after {timeout:.0f} s")


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# nginx: the fake upstream and the plain proxy_pass floor
# --------------------------------------------------------------------------------------------


def nginx_prelude(root: Path, workers: int) -> str:
    temp = "".join(f"    {kind}_temp_path {root}/{kind};\n" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"{LUA_MODULES}daemon off;\nworker_processes {workers};\npid {root}/nginx.pid;\n"
        f"error_log {root}/error.log warn;\nevents {{\n    worker_connections 4096;\n}}\n"
        f"http {{\n    access_log off;\n    default_type application/json;\n    server_tokens off;\n"
        f"    client_body_temp_path {root}/client_body;\n{temp}"
    )


def lua_long_string(text: str) -> str:
    assert "]==]" not in text
    return f"[==[{text}]==]"


def upstream_lua() -> str:
    created = 1700000000
    answer = {
        "id": "chatcmpl-bench0000000000000000",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is the benchmark's fixed answer."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 210, "completion_tokens": 11, "total_tokens": 221},
    }
    deltas: list[tuple[dict[str, str], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hello"}, None),
        ({"content": " world"}, None),
        ({"content": "!"}, None),
        ({}, "stop"),
    ]
    chunks = []
    for delta, finish in deltas:
        chunk = {
            "id": "chatcmpl-bench0000000000000000",
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        chunks.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n")
    chunk_list = ",\n".join(f"    {lua_long_string(chunk)}" for chunk in chunks)
    return f"""-- Fake OpenAI backend for the router benchmark (generated by tests/bench/router_bench.py).
local ngx = ngx
local find = string.find
local _M = {{}}

local ANSWER = {lua_long_string(json.dumps(answer, separators=(",", ":")))}
local CHUNKS = {{
{chunk_list}
}}
local GAP = {STREAM_GAP_S}

function _M.chat()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body and #body <= 65536 and (find(body, '"stream": true', 1, true) or find(body, '"stream":true', 1, true)) then
        ngx.header["Content-Type"] = "text/event-stream"
        ngx.header["Cache-Control"] = "no-cache"
        for i = 1, #CHUNKS do
            if i > 1 then
                ngx.sleep(GAP)
            end
            ngx.print(CHUNKS[i])
            ngx.flush(true)
        end
        ngx.print("data: [DONE]\\n\\n")
        return
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Content-Length"] = #ANSWER
    ngx.print(ANSWER)
end

return _M
"""


def upstream_conf(root: Path, port: int) -> str:
    models = json.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 1700000000, "owned_by": "bench", "root": name}
                for name in (MODEL, "tiny-nemotron")
            ],
        },
        separators=(",", ":"),
    )
    return nginx_prelude(root, 1) + (
        f'    lua_package_path "{root}/?.lua;/usr/share/lua/5.1/?.lua;;";\n'
        "    keepalive_requests 1000000;\n"
        "    keepalive_timeout 300s;\n"
        "    client_max_body_size 64m;\n"
        # The 20 MB bodies stay in memory: the upstream must not be what the body test measures.
        "    client_body_buffer_size 32m;\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port} backlog=4096;\n"
        "        location = /health { return 200; }\n"
        f"        location = /v1/models {{ return 200 '{models}'; }}\n"
        '        location = /v1/chat/completions { content_by_lua_block { require("bench_upstream").chat() } }\n'
        '        location / { return 404 \'{"error":{"message":"not found","type":"not_found"}}\'; }\n'
        "    }\n}\n"
    )


# --diagnose: plain nginx with the two Lua phases a routing-by-body router needs, both empty. What it
# costs over plain nginx is the floor of any such router before it does any work.
EMPTY_LUA_PHASES = "            access_by_lua_block { }\n            log_by_lua_block { }\n"
FLOOR = "plain nginx + empty access/log Lua"


def plain_proxy_conf(root: Path, port: int, upstream_port: int, workers: int, lua_phases: str = "") -> str:
    # The router's own settings where they matter: body buffering, keepalive 32, no response buffering.
    return nginx_prelude(root, workers) + (
        "    client_max_body_size 64m;\n"
        "    client_body_buffer_size 1m;\n"
        "    upstream backend {\n"
        f"        server 127.0.0.1:{upstream_port} max_fails=0;\n"
        "        keepalive 32;\n"
        "    }\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port};\n"
        "        location / {\n"
        "            proxy_pass http://backend;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_buffering off;\n"
        "            proxy_read_timeout 3600s;\n"
        "            proxy_next_upstream off;\n"
        f"{lua_phases}"
        "        }\n"
        "    }\n}\n"
    )


def start_nginx(stack: contextlib.ExitStack, root: Path, conf: str, port: int) -> int:
    path = root / "nginx.conf"
    path.write_text(conf)
    check = subprocess.run([NGINX, "-t", "-q", "-c", str(path)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t {path}: {check.stderr}")
    proc = stack.enter_context(started([NGINX, "-c", str(path)], root / "stdout.log"))
    wait_for_port(port)
    return proc.pid


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    slow: bool = False  # LiteLLM: short wrk runs
    version: str = ""
    pid: int | None = None  # the server's main process: its tree's CPU time is measured

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server's process tree so far (0 when unknown)."""
        return cpu_seconds(process_tree(self.pid)) if self.pid else 0.0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd on: state, ppid, ...


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        if fields := _stat_fields(pid):
            total += int(fields[11]) + int(fields[12])  # utime, stime: all threads of the process
    return total / CLOCK_TICKS


def ensure_venv(venv: Path, requirement: str, executable: str) -> Path:
    """The tool's own venv under .cache/bench, created on first use (never the project's .venv)."""
    binary = venv / "bin" / executable
    if binary.exists():
        return binary
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}-install.log"
    print(f"installing {requirement} into {venv} (log: {log}) ...", flush=True)
    with log.open("w") as out:
        steps = [[sys.executable, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", requirement]]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise Skipped(f"`{' '.join(step)}` failed: {tail(log, 600)}")
    if not binary.exists():
        raise Skipped(f"{requirement} installed no {executable}")
    return binary


def pip_version(venv: Path, package: str) -> str:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def chat_works(target: Target) -> bool:
    status, _ = http_post(target.url + CHAT, chat_body(), target.headers, timeout=10)
    return status == 200


def start_litellm(stack: contextlib.ExitStack, work: Path, upstream_port: int) -> Target:
    venv = CACHE / "litellm-venv"
    binary = ensure_venv(venv, "litellm[proxy]", "litellm")
    root = work / "litellm"
    root.mkdir()
    config = root / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: dummy\n"
    )
    key = "sk-" + secrets.token_hex(16)
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=key, NO_PROXY="*", no_proxy="*")
    port = free_port()
    log = root / "litellm.log"
    cmd = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    proc = stack.enter_context(started(cmd, log, env))
    target = Target("litellm", port, headers={"Authorization": f"Bearer {key}"}, slow=True, pid=proc.pid)
    target.version = pip_version(venv, "litellm")
    try:
        wait_until(lambda: http_get(target.url + "/health/liveliness")[0] == 200, 180, "litellm", proc)
        wait_until(lambda: chat_works(target), 60, "litellm chat", proc)
    except Skipped as err:
        raise Skipped(f"{err}\n{tail(log)}") from None
    return target


def start_vllm_router(stack: contextlib.ExitStack, work: Path, upstream_port: int, policy: str) -> Target:
    venv = CACHE / "vllm-router-venv"
    binary = ensure_venv(venv, "vllm-router", "vllm-router")
    root = work / "vllm-router"
    root.mkdir()
    port = free_port()
    log = root / "vllm-router.log"
    # --enable-igw: multi-model mode, workers registered at run time with their model id, and
    # requests routed by the exact "model" of their body.
    # --vllm-policy round_robin (default here): the cheapest policy, one backend per model; its own
    # default, cache_aware, also keeps a prefix tree of every prompt, work this router does not do.
    cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--enable-igw", "--policy", policy]
    cmd += ["--log-level", "warning", "--prometheus-port", str(free_port())]
    proc = stack.enter_context(started(cmd, log))
    target = Target("vllm-router", port, pid=proc.pid)
    target.version = pip_version(venv, "vllm-router")
    try:
        wait_until(lambda: http_get(target.url + "/health")[0] != 0, 60, "vllm-router", proc)
        # Two models, as the router has: the second one under another spelling of the same address.
        for host, model in (("127.0.0.1", MODEL), ("localhost", "tiny-nemotron")):
            backend = json.dumps({"url": f"http://{host}:{upstream_port}", "model_id": model}).encode()
            status, answer = http_post(target.url + "/workers", backend, {}, timeout=30)
            if status not in (200, 201, 202):
                raise Skipped(f"vllm-router: POST /workers answered {status}: {answer[:300]!r}")
        wait_until(lambda: chat_works(target), 60, "vllm-router chat", proc)
    except Skipped as err:
        raise Skipped(f"{err}\n{tail(log)}") from None
    return target


# Diagnostic copies of the rendered router config (--diagnose), to see where its time goes.
ACCESS_LUA = r"access_by_lua_block \{ llm_router.access\(\) \}"
LOG_LUA = r"log_by_lua_block \{ llm_router.log\(\) \}"
VARIANTS: dict[str, list[tuple[str, str]]] = {
    "router, no access_log": [(r"access_log \S+ llm_json[^;]*;", "access_log off;")],
    "router, no log_by_lua (metrics)": [(LOG_LUA, "")],
    "router, no Lua": [(ACCESS_LUA, "set $llm_upstream vllm_tiny-qwen;"), (LOG_LUA, "")],
    "router, no Lua, no access_log": [
        (ACCESS_LUA, "set $llm_upstream vllm_tiny-qwen;"),
        (LOG_LUA, ""),
        (r"access_log \S+ llm_json[^;]*;", "access_log off;"),
    ],
}


def moved(conf: str, port: int, pid: Path) -> str:
    """An nginx.conf of one of the targets, listening on another port with another PID file."""
    conf, listens = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{port};", conf)
    conf, pids = re.subn(r"pid \S+;", f"pid {pid};", conf)
    assert listens == 1 and pids == 1, "unexpected nginx.conf"
    return conf


def variant(conf: str, name: str) -> str:
    """The rendered router config with the parts VARIANTS[name] takes out."""
    for pattern, replacement in VARIANTS[name]:
        conf, count = re.subn(pattern, replacement, conf)
        assert count >= 1, f"{name}: {pattern} matched nothing"
    return conf


def start_variant(stack: contextlib.ExitStack, router_dir: Path, name: str, index: int) -> Target:
    port = free_port()
    rendered = (router_dir / "etc" / "nginx.conf").read_text()
    text = variant(moved(rendered, port, router_dir / "run" / f"variant{index}.pid"), name)
    conf = router_dir / "etc" / f"variant{index}.conf"
    conf.write_text(text)
    proc = stack.enter_context(started([NGINX, "-c", str(conf)], router_dir / f"variant{index}.log"))
    wait_for_port(port)
    target = Target(name, port, pid=proc.pid)
    wait_until(lambda: chat_works(target), 10, name)
    return target


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


@dataclass
class Wrk:
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors
    cpu_us: float = float("nan")  # the server's CPU time per request


UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_wrk(output: str) -> Wrk:
    def latency(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        return float(found.group(1)) * UNITS_US[found.group(2)] if found else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Wrk(
        rps=float(rps.group(1)) if rps else 0.0,
        p50_us=latency("50"),
        p99_us=latency("99"),
        requests=int(total.group(1)) if total else 0,
        errors=errors,
    )


def wrk_script(work: Path, target: Target) -> Path:
    path = work / f"wrk-{target.port}.lua"
    if not path.exists():
        lines = [
            'wrk.method = "POST"',
            f"wrk.body = {lua_long_string(chat_body().decode())}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
        lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in target.headers.items()]
        path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(work: Path, target: Target, threads: int, connections: int, duration: float) -> Wrk:
    seconds = max(1, round(min(duration, LITELLM_MAX_S) if target.slow else duration))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    cmd += ["-s", str(wrk_script(work, target)), target.url + CHAT]
    cpu_before = target.cpu_seconds()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 60)
    cpu = target.cpu_seconds() - cpu_before
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed on {target.name}: {result.stderr}")
    parsed = parse_wrk(result.stdout)
    if target.pid and parsed.requests:
        parsed.cpu_us = cpu / parsed.requests * 1e6
    return parsed


def sse_ttfe(target: Target, count: int) -> tuple[list[float], int]:
    """Seconds from sending a streaming request to its first complete `data:` line; and failures."""
    body = chat_body(stream=True)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in target.headers.items())
        + "\r\n"
    )
    request = head.encode() + body
    times: list[float] = []
    failures = 0
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = b""
            first: float | None = None
            start = time.perf_counter()
            sock.sendall(request)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
                if first is None:
                    body_at = buffer.find(b"\r\n\r\n")
                    line = buffer.find(b"data:", body_at) if body_at >= 0 else -1
                    if line >= 0 and buffer.find(b"\n", line) >= 0:
                        first = time.perf_counter() - start
                if b"data: [DONE]" in buffer and buffer.endswith(b"\r\n\r\n"):
                    break  # the whole stream (and its last chunk) is in: do not wait for the close
        if first is not None and buffer.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in buffer:
            times.append(first)
        else:
            failures += 1
    return times, failures


def big_request(port: int, body: bytes) -> float:
    """End-to-end seconds of one 20 MB POST (connect, send, whole answer)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", CHAT, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"20 MB body on port {port}: HTTP {response.status}")
    return elapsed


# --------------------------------------------------------------------------------------------
# Rounds and report
# --------------------------------------------------------------------------------------------


@dataclass
class Results:
    load: dict[str, list[Wrk]] = field(default_factory=dict)
    single: dict[str, list[Wrk]] = field(default_factory=dict)
    ttfe: dict[str, list[list[float]]] = field(default_factory=dict)
    ttfe_failures: dict[str, int] = field(default_factory=dict)
    big: dict[str, list[list[float]]] = field(default_factory=dict)
    big_cpu: dict[str, list[float]] = field(default_factory=dict)  # per round: CPU seconds per request


def run_rounds(args: argparse.Namespace, work: Path, targets: list[Target], big_targets: list[Target]) -> Results:
    results = Results()
    body = big_body(args.big_mb)
    print("warming up ...", flush=True)
    for target in targets:
        run_wrk(work, target, 2, 8, 1)
        sse_ttfe(target, 5)
    for number in range(args.rounds):
        shift = number % len(targets)
        order = targets[shift:] + targets[:shift]
        print(f"round {number + 1}/{args.rounds}: {', '.join(t.name for t in order)}", flush=True)
        for target in order:
            result = run_wrk(work, target, 2, 32, args.duration)
            results.load.setdefault(target.name, []).append(result)
            print(
                f"  {target.name:36} load   {result.rps:10.0f} req/s  p50 {fmt_us(result.p50_us)}"
                f"  CPU {fmt_us(result.cpu_us)}/req",
                flush=True,
            )
        for target in order:
            result = run_wrk(work, target, 1, 1, args.duration)
            results.single.setdefault(target.name, []).append(result)
            print(f"  {target.name:36} 1-conn {result.rps:10.0f} req/s  p50 {fmt_us(result.p50_us)}", flush=True)
        for target in order:
            times, failures = sse_ttfe(target, args.sse)
            results.ttfe.setdefault(target.name, []).append(times)
            results.ttfe_failures[target.name] = results.ttfe_failures.get(target.name, 0) + failures
            median = statistics.median(times) * 1e6 if times else float("nan")
            print(f"  {target.name:36} SSE    first event p50 {fmt_us(median)}", flush=True)
        # 20 MB bodies: the targets alternate request by request.
        # CPU is summed over a round's requests: /proc counts it in 10 ms ticks.
        times_by: dict[str, list[float]] = {target.name: [] for target in big_targets}
        cpu_by: dict[str, float] = {target.name: 0.0 for target in big_targets}
        for index in range(args.big):
            for target in big_targets[index % 2 :] + big_targets[: index % 2]:
                cpu_before = target.cpu_seconds()
                times_by[target.name].append(big_request(target.port, body))
                cpu_by[target.name] += target.cpu_seconds() - cpu_before
        for name, times in times_by.items():
            results.big.setdefault(name, []).append(times)
            cpu_per_request = cpu_by[name] / len(times)
            results.big_cpu.setdefault(name, []).append(cpu_per_request)
            print(
                f"  {name:36} {args.big_mb} MB body p50 {statistics.median(times) * 1e3:.2f} ms"
                f"  CPU {cpu_per_request * 1e3:.1f} ms/req",
                flush=True,
            )
    return results


def fmt_us(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if value >= 10_000:
        return f"{value / 1000:.1f} ms"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.0f} µs"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def round_values(results: Results, metric: str, name: str) -> list[float] | None:
    """One value per round: rps, cpu (µs/req), single (1-conn p50 µs), ttfe and big (median s),
    big_cpu (s/req)."""
    if metric in ("rps", "cpu"):
        runs = results.load.get(name)
        return [w.rps if metric == "rps" else w.cpu_us for w in runs] if runs else None
    if metric == "single":
        runs = results.single.get(name)
        return [w.p50_us for w in runs] if runs else None
    if metric == "big_cpu":
        return results.big_cpu.get(name)
    samples = (results.ttfe if metric == "ttfe" else results.big).get(name)
    return [median(times) for times in samples] if samples else None


def per_round(results: Results, metric: str, a: str, b: str, combine: Callable[[float, float], float]) -> float:
    """Median over rounds of combine(a's value, b's value), both measured in the same round."""
    xs, ys = round_values(results, metric, a), round_values(results, metric, b)
    if not xs or not ys:
        return float("nan")
    return median([combine(x, y) for x, y in zip(xs, ys, strict=True)])


def report(results: Results, targets: list[Target], skipped: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        "| target | req/s | p50 | p99 | server CPU/req | 1-conn p50 | SSE TTFE p50 | SSE TTFE p99 | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target in targets:
        load = results.load[target.name]
        single = results.single[target.name]
        flat = [t for times in results.ttfe[target.name] for t in times]
        errors = sum(w.errors for w in load + single) + results.ttfe_failures.get(target.name, 0)
        requests = sum(w.requests for w in load + single)
        name = f"{target.name} {target.version}".strip()
        lines.append(
            f"| {name} | {median([w.rps for w in load]):,.0f} | {fmt_us(median([w.p50_us for w in load]))} "
            f"| {fmt_us(median([w.p99_us for w in load]))} | {fmt_us(median([w.cpu_us for w in load]))} "
            f"| {fmt_us(median([w.p50_us for w in single]))} "
            f"| {fmt_us(median(flat) * 1e6)} | {fmt_us(p99(flat) * 1e6)} | {errors} / {requests:,} |"
        )
    for name, why in skipped.items():
        lines.append(f"| {name} | skipped: {why.splitlines()[0][:100]} | | | | | | | |")
    big_lines = [f"| target | {args.big_mb} MB body p50 (end to end) | server CPU/request |", "| --- | ---: | ---: |"]
    for name, rounds in results.big.items():
        big_lines.append(
            f"| {name} | {median([t for times in rounds for t in times]) * 1e3:.2f} ms "
            f"| {median(results.big_cpu[name]) * 1e3:.1f} ms |"
        )

    measured = {
        "router_vs_plain_rps": per_round(results, "rps", "router", "plain nginx", lambda x, y: x / y),
        "router_minus_plain_1conn_us": per_round(results, "single", "router", "plain nginx", lambda x, y: x - y),
        "router_vs_litellm_rps": per_round(results, "rps", "router", "litellm", lambda x, y: x / y),
        "router_vs_vllm_router_rps": per_round(results, "rps", "router", "vllm-router", lambda x, y: x / y),
        "router_minus_direct_ttfe_ms": per_round(results, "ttfe", "router", "direct", lambda x, y: (x - y) * 1e3),
        "router_minus_plain_big_cpu_ms": per_round(
            results, "big_cpu", "router", "plain nginx", lambda x, y: (x - y) * 1e3
        ),
    }
    goal_lines = ["| comparison (median of per-round values) | measured | goal | met |", "| --- | ---: | ---: | --- |"]
    for label, key, op, goal in GOALS:
        value = measured[key]
        if value != value:
            goal_lines.append(f"| {label} | n/a | {op} {goal:g} | not measured |")
            continue
        met = value >= goal if op == ">=" else value <= goal
        shown = f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
        goal_lines.append(f"| {label} | {shown} | {op} {goal:g} | {'yes' if met else 'NO'} |")
    added_cpu = per_round(results, "cpu", "router", "plain nginx", lambda x, y: x - y)
    goal_lines.append(f"| (info) router CPU/req - plain nginx CPU/req (µs) | {added_cpu:.1f} | | |")
    added_big = per_round(results, "big", "router", "plain nginx", lambda x, y: (x - y) * 1e3)
    goal_lines.append(f"| (info) router {args.big_mb} MB body end to end - plain nginx (ms) | {added_big:.1f} | | |")
    diag = [t.name for t in targets if t.name.startswith("router, ") or t.name == FLOOR]
    if diag:
        goal_lines.append("")
        goal_lines.append(
            "| diagnostic variant | req/s ÷ router | req/s ÷ plain nginx | CPU/req - router | CPU/req - plain nginx"
            " | 1-conn p50 - router | 1-conn p50 - plain nginx |"
        )
        goal_lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in [*diag, "plain nginx"]:
            cells = [
                f"{per_round(results, 'rps', name, 'router', lambda x, y: x / y):.3f}",
                f"{per_round(results, 'rps', name, 'plain nginx', lambda x, y: x / y):.3f}",
                f"{per_round(results, 'cpu', name, 'router', lambda x, y: x - y):+.1f} µs",
                f"{per_round(results, 'cpu', name, 'plain nginx', lambda x, y: x - y):+.1f} µs",
                f"{per_round(results, 'single', name, 'router', lambda x, y: x - y):+.0f} µs",
                f"{per_round(results, 'single', name, 'plain nginx', lambda x, y: x - y):+.0f} µs",
            ]
            goal_lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join([*lines, "", *big_lines, "", *goal_lines])


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk (apt-get) ...", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True, check=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5, help="seconds of each wrk run (default 5)")
    parser.add_argument("--skip", default="", help="comma-separated: litellm, vllm-router")
    parser.add_argument("--workers", type=int, default=1, help="worker_processes of plain nginx and the router")
    parser.add_argument("--sse", type=int, default=50, help="streaming requests per target and round (default 50)")
    parser.add_argument("--big", type=int, default=10, help="large-body requests per target and round (default 10)")
    parser.add_argument("--big-mb", type=int, default=20, help="size of the large body in MB (default 20)")
    parser.add_argument("--vllm-policy", default="round_robin", help="vllm-router --policy (default round_robin)")
    parser.add_argument("--diagnose", action="store_true", help="add copies of the router config without parts")
    args = parser.parse_args()
    unknown = set(filter(None, args.skip.split(","))) - {"litellm", "vllm-router"}
    if unknown:
        parser.error(f"--skip: unknown {', '.join(sorted(unknown))}")
    return args


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    signal.signal(signal.SIGTERM, on_sigterm)
    ensure_wrk()
    skipped: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        work = router_root("bench")
        stack.callback(shutil.rmtree, work, True)

        upstream_port = free_port()
        up_dir = work / "upstream"
        up_dir.mkdir()
        (up_dir / "bench_upstream.lua").write_text(upstream_lua())
        direct = Target("direct", upstream_port)
        direct.pid = start_nginx(stack, up_dir, upstream_conf(up_dir, upstream_port), upstream_port)

        plain_dir = work / "plain"
        plain_dir.mkdir()
        plain = Target("plain nginx", free_port())
        plain.pid = start_nginx(
            stack, plain_dir, plain_proxy_conf(plain_dir, plain.port, upstream_port, args.workers), plain.port
        )

        models = [
            {"key": "tiny-qwen", "served_names": [MODEL], "route_matches": ["qwen"], "port": upstream_port},
            {
                "key": "tiny-nemotron",
                "served_names": ["tiny-nemotron"],
                "route_matches": ["nemotron"],
                "port": upstream_port,
            },
        ]
        print("rendering the router role (ansible-playbook) ...", flush=True)
        router_dir = router_root("bench-router")
        stack.callback(shutil.rmtree, router_dir, True)  # also when rendering fails
        overrides = {"router_worker_processes": str(args.workers), "router_health_interval": 1}
        started_router = stack.enter_context(running_router(router_dir, tool_environment(), models, **overrides))
        router = Target("router", started_router.port, pid=int((router_dir / "run" / "nginx.pid").read_text()))
        wait_until(lambda: http_get(router.url + "/health")[0] == 200, 30, "router /health")
        if not chat_works(router):
            raise RuntimeError(f"the router does not answer chat requests:\n{tail(router_dir / 'log' / 'error.log')}")
        for target in (direct, plain):
            if not chat_works(target):
                raise RuntimeError(f"{target.name} does not answer chat requests")
        targets = [direct, plain, router]

        starters: tuple[tuple[str, Callable[[], Target]], ...] = (
            ("litellm", lambda: start_litellm(stack, work, upstream_port)),
            ("vllm-router", lambda: start_vllm_router(stack, work, upstream_port, args.vllm_policy)),
        )
        for name, start in starters:
            if name in skip:
                skipped[name] = "--skip"
                continue
            print(f"starting {name} ...", flush=True)
            try:
                targets.append(start())
            except Skipped as err:
                skipped[name] = str(err)
                print(f"{name} skipped: {err}", flush=True)
        if args.diagnose:
            for index, name in enumerate(VARIANTS):
                targets.append(start_variant(stack, router_dir, name, index))
            floor_dir = work / "floor"
            floor_dir.mkdir()
            floor = Target(FLOOR, free_port())
            floor.pid = start_nginx(
                stack,
                floor_dir,
                plain_proxy_conf(floor_dir, floor.port, upstream_port, args.workers, EMPTY_LUA_PHASES),
                floor.port,
            )
            targets.append(floor)

        nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False).stderr.strip()
        results = run_rounds(args, work, targets, [plain, router])
        when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        print()
        print(
            f"{when}; {os.cpu_count()} CPUs; {nginx_version}; worker_processes {args.workers}; "
            f"{args.rounds} rounds; wrk {args.duration:g} s (LiteLLM {LITELLM_MAX_S} s), 2 threads 32 conns; "
            f"SSE {args.sse}/round; {args.big_mb} MB body {args.big}/round; vllm-router --policy {args.vllm_policy}"
        )
        print()
        print(report(results, targets, skipped, args))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
