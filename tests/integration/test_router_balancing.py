"""A model served by several backends, through the real nginx + Lua router (stub backends stand in
for vLLM hosts; the several-hosts Molecule scenario runs real vLLM): fewest requests in flight
first, only ready backends, a stopped backend's share goes to the others without a failed request,
and it is taken back once it answers /health again."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator

import pytest
from router_fixture import Router, router_root, running_router
from stub_backend import StubBackend
from test_router import call, wait_until

SERVED_NAME = "tiny-qwen3"


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[StubBackend]]:
    stubs = [StubBackend("tiny-qwen", SERVED_NAME).start() for _ in range(2)]
    yield stubs
    for stub in stubs:
        stub.stop()


@pytest.fixture(scope="module")
def balanced_router(replicas, tool_env) -> Iterator[Router]:
    root = router_root("balanced")
    models = [{"key": "tiny-qwen", "served_names": [SERVED_NAME], "route_matches": ["qwen"], "port": replicas[0].port}]
    # The second backend is named, not an IP: the role resolves it on the router host.
    backends = {
        "tiny-qwen": [{"host": "127.0.0.1", "port": replicas[0].port}, {"host": "localhost", "port": replicas[1].port}]
    }
    with running_router(
        root, tool_env, models, router_backends=backends, router_health_interval=1, router_health_timeout=0.5
    ) as running:
        wait_until(
            lambda: (
                health(running)["backends"]["tiny-qwen"]
                == {
                    f"127.0.0.1:{replicas[0].port}": "ready",
                    f"127.0.0.1:{replicas[1].port}": "ready",
                }
            )
        )
        yield running
        lua_errors = [line for line in running.error_log().splitlines() if "[error]" in line and "lua" in line]
        assert not lua_errors, lua_errors


@pytest.fixture(autouse=True)
def both_replicas_back(replicas, balanced_router) -> Iterator[None]:
    yield
    for stub in replicas:
        stub.ready = True
        call(balanced_router, "DELETE", f"/drain?backend=127.0.0.1:{stub.port}")
    wait_until(lambda: set(health(balanced_router)["backends"]["tiny-qwen"].values()) == {"ready"}, timeout=15)


def health(router: Router) -> dict:
    return json.loads(call(router, "GET", "/health")[2])


def chat(router: Router) -> int:
    return call(router, "POST", "/v1/chat/completions", {"model": SERVED_NAME, "messages": []})[0]


def counts(replicas: list[StubBackend]) -> list[int]:
    return [len(stub.requests) for stub in replicas]


def drain(router: Router, stub: StubBackend, method: str = "POST", query: str = "") -> tuple[int, dict]:
    """As a model server's host drains its own server: by port, from the address the router knows."""
    status, _, data = call(router, method, f"/drain?port={stub.port}{query}")
    return status, json.loads(data)


def open_stream(router: Router, events: int, gap: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
    body = json.dumps({"model": SERVED_NAME, "stream": True, "events": events, "gap": gap})
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.read1()  # the first event: the stream is open on its backend
    return conn, response


def test_one_request_at_a_time_spreads_over_every_backend(balanced_router, replicas):
    before = counts(replicas)
    statuses = [chat(balanced_router) for _ in range(20)]
    spread = [after - start for after, start in zip(counts(replicas), before, strict=True)]
    assert statuses == [200] * 20
    # Two nginx workers each take turns: neither backend is left idle.
    assert sum(spread) == 20 and min(spread) >= 5, spread


def test_new_requests_go_to_the_backend_with_fewer_in_flight(balanced_router, replicas):
    # Three slow streams: the first two land one on each backend, the third on either; the next
    # short request must go to the backend with one stream open, not two.
    streams = [open_stream(balanced_router, events=20, gap=0.1) for _ in range(3)]
    before = counts(replicas)
    assert chat(balanced_router) == 200
    chosen = [after - start for after, start in zip(counts(replicas), before, strict=True)].index(1)

    def in_flight() -> dict[str, int]:
        metrics = call(balanced_router, "GET", "/metrics")[2].decode()
        return {
            line.split('backend="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("llm_router_backend_in_flight{")
        }

    # The short request gives its slot back in its log phase, just after its answer went out.
    wait_until(lambda: sum(in_flight().values()) == 3)
    in_flight_now = in_flight()
    for conn, response in streams:
        response.read()
        conn.close()
    # Three streams over two backends: one backend holds two, the other one; the short request
    # went to the one with a single stream.
    assert sorted(in_flight_now.values()) == [1, 2], in_flight_now
    ports = [stub.port for stub in replicas]
    assert in_flight_now[f"127.0.0.1:{ports[chosen]}"] == 1, in_flight_now


def test_backend_not_ready_gets_no_requests_and_the_model_stays_ready(balanced_router, replicas):
    replicas[1].ready = False
    wait_until(lambda: health(balanced_router)["backends"]["tiny-qwen"][f"127.0.0.1:{replicas[1].port}"] == "down")
    status, _, _ = call(balanced_router, "GET", "/health")
    assert status == 200
    before = counts(replicas)
    assert [chat(balanced_router) for _ in range(10)] == [200] * 10
    assert counts(replicas)[1] == before[1]
    assert counts(replicas)[0] == before[0] + 10


def test_stopped_backend_fails_over_without_a_failed_request_and_comes_back(balanced_router, replicas):
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            # A response the stopped backend cut short raises; it is a failed request (0), and the
            # client goes on instead of dying with it.
            try:
                status = chat(balanced_router)
            except (http.client.HTTPException, OSError):
                status = 0
            results.append((started, status))

    workers = [threading.Thread(target=client) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    replicas[1].stop()
    stopped = time.monotonic()
    # The probe (every second) marks it down; until then, a refused connection moves the request on.
    port = replicas[1].port
    wait_until(lambda: health(balanced_router)["backends"]["tiny-qwen"][f"127.0.0.1:{port}"] == "down")
    time.sleep(1)
    replicas[1].restart()
    wait_until(lambda: health(balanced_router)["backends"]["tiny-qwen"][f"127.0.0.1:{port}"] == "ready")
    taken_back = len(replicas[1].requests)
    time.sleep(1)
    stop.set()
    for worker in workers:
        worker.join()
    after_stop = [status for started, status in results if started > stopped]
    # Requests the stopped backend was answering when it went are lost with it; no new one is.
    in_flight_then = [status for started, status in results if started <= stopped and status != 200]
    assert len(after_stop) > 50
    assert set(after_stop) == {200}, {status: after_stop.count(status) for status in set(after_stop)}
    assert len(in_flight_then) <= len(workers)
    assert len(replicas[1].requests) > taken_back


def test_every_backend_down_gets_503_with_retry_after(balanced_router, replicas):
    for stub in replicas:
        stub.ready = False
    wait_until(lambda: health(balanced_router)["models"]["tiny-qwen"] == "down")
    status, headers, data = call(balanced_router, "POST", "/v1/chat/completions", {"model": SERVED_NAME})
    assert status == 503
    assert headers["Retry-After"]
    assert json.loads(data)["error"]["code"] == "backend_not_ready"


def test_drained_backend_gets_no_new_request_and_its_stream_finishes(balanced_router, replicas):
    before = counts(replicas)
    conn, response = open_stream(balanced_router, events=30, gap=0.1)
    streaming = [after - start for after, start in zip(counts(replicas), before, strict=True)].index(1)
    drained, other = replicas[streaming], replicas[1 - streaming]
    assert drain(balanced_router, drained, query="&seconds=60") == (
        200,
        {"backend": f"127.0.0.1:{drained.port}", "draining": True, "models": 1},
    )
    status, _, data = call(balanced_router, "GET", "/health")
    assert status == 200, data  # the model is still served by the other backend
    assert json.loads(data)["backends"]["tiny-qwen"][f"127.0.0.1:{drained.port}"] == "draining"
    before = counts(replicas)
    assert [chat(balanced_router) for _ in range(10)] == [200] * 10
    assert counts(replicas)[streaming] == before[streaming]
    assert counts(replicas)[1 - streaming] == before[1 - streaming] + 10
    # Probes that find the drained backend answering keep it out.
    time.sleep(2.5)
    assert health(balanced_router)["backends"]["tiny-qwen"][f"127.0.0.1:{drained.port}"] == "draining"
    rest = response.read()
    conn.close()
    assert rest.rstrip().endswith(b"data: [DONE]"), rest[-200:]
    assert drain(balanced_router, drained, method="DELETE")[0] == 200
    wait_until(lambda: health(balanced_router)["backends"]["tiny-qwen"][f"127.0.0.1:{drained.port}"] == "ready")
    assert other.ready


def test_drain_ends_when_the_backend_stops_answering(balanced_router, replicas):
    port = replicas[1].port
    # As an operator on the router host names any backend.
    assert call(balanced_router, "POST", f"/drain?backend=127.0.0.1:{port}")[0] == 200
    replicas[1].stop()
    wait_until(lambda: health(balanced_router)["backends"]["tiny-qwen"][f"127.0.0.1:{port}"] == "down")
    replicas[1].restart()
    # No DELETE: the server that comes back is a new one, taken back by the probes.
    wait_until(lambda: health(balanced_router)["backends"]["tiny-qwen"][f"127.0.0.1:{port}"] == "ready")


def test_drain_of_every_backend_gets_503_with_retry_after_and_expires(balanced_router, replicas):
    for stub in replicas:
        assert drain(balanced_router, stub, query="&seconds=4")[0] == 200
    status, headers, data = call(balanced_router, "POST", "/v1/chat/completions", {"model": SERVED_NAME})
    assert status == 503, data
    assert headers["Retry-After"]
    assert json.loads(data)["error"]["code"] == "backend_not_ready"
    assert health(balanced_router)["models"]["tiny-qwen"] == "down"
    refused = time.monotonic()
    wait_until(lambda: health(balanced_router)["models"]["tiny-qwen"] == "ready", timeout=10)
    print(f"drain of 4 s: the model was ready again {time.monotonic() - refused:.1f}s after the 503")


@pytest.mark.parametrize(
    ("method", "query", "status", "code"),
    [
        ("POST", "", 400, "missing_backend"),
        ("POST", "?backend=127.0.0.1:{port}&port={port}", 400, "invalid_backend"),
        ("POST", "?port=70000", 400, "invalid_backend"),
        ("POST", "?backend=127.0.0.1:{port}&seconds=0", 400, "invalid_seconds"),
        ("POST", "?backend=127.0.0.1:{port}&seconds=soon", 400, "invalid_seconds"),
        ("POST", "?backend=10.9.9.9:8011", 404, "backend_not_found"),
        ("POST", "?port=1", 404, "backend_not_found"),
        ("GET", "?backend=127.0.0.1:{port}", 405, "method_not_allowed"),
    ],
)
def test_drain_refuses_bad_requests(balanced_router, replicas, method, query, status, code):
    answer = call(balanced_router, method, "/drain" + query.format(port=replicas[0].port))
    assert answer[0] == status
    error = json.loads(answer[2])["error"]
    assert error["code"] == code
    if status == 404:
        assert f"127.0.0.1:{replicas[0].port}" in error["message"]
    if status == 405:
        assert answer[1]["Allow"] == "POST, DELETE"
    assert set(health(balanced_router)["backends"]["tiny-qwen"].values()) == {"ready"}


def test_every_ready_backend_refusing_gets_503_at_once(tool_env):
    """Two backends stop listening between two health probes while the third is not ready: the
    balancer tries both, has no ready backend left to try, and the request gets 503 with
    Retry-After at once (not nginx's 502, not a wait for the next probe); both are marked down."""
    stubs = [StubBackend("tiny-qwen", SERVED_NAME).start() for _ in range(3)]
    stubs[2].ready = False
    ids = [f"127.0.0.1:{stub.port}" for stub in stubs]
    models = [{"key": "tiny-qwen", "served_names": [SERVED_NAME], "route_matches": ["qwen"], "port": stubs[0].port}]
    backends = {"tiny-qwen": [{"host": "127.0.0.1", "port": stub.port} for stub in stubs]}
    try:
        with running_router(
            router_root("refusing"), tool_env, models, router_backends=backends, router_health_interval=120
        ) as running:
            wait_until(
                lambda: health(running)["backends"]["tiny-qwen"] == {ids[0]: "ready", ids[1]: "ready", ids[2]: "down"}
            )
            for stub in stubs[:2]:
                stub.stop()
            status, headers, data = call(running, "POST", "/v1/chat/completions", {"model": SERVED_NAME})
            assert status == 503, data
            assert headers["Retry-After"]
            assert json.loads(data)["error"]["code"] == "backend_not_ready"
            assert health(running)["backends"]["tiny-qwen"] == dict.fromkeys(ids, "down")
            assert not any(stub.requests for stub in stubs)
            # Counts reach /metrics within a second (each worker adds its own once a second).
            counted = 'llm_router_requests_total{model="tiny-qwen",status="503"} 1'
            wait_until(lambda: counted in call(running, "GET", "/metrics")[2].decode())
            metrics = call(running, "GET", "/metrics")[2].decode()
            assert set(re.findall(r"llm_router_backend_in_flight\{.*\} (\d+)", metrics)) == {"0"}
    finally:
        for stub in stubs:
            stub.stop()
