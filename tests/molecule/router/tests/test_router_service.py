"""The router as a running systemd service in a real host (profile cpu-demo, no vLLM yet):
requests go through the service on port 8000; a stub backend started inside the host stands in
for vLLM (the serving scenarios run the real one)."""

import json
import time

import pytest
import testinfra.host

STUB = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health":
            self._send(200, b"")
        else:
            self._send(200, json.dumps({"object": "list", "data": [{"id": "tiny-qwen3", "object": "model"}]}).encode())
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, json.dumps({"backend": "stub-qwen", "path": self.path}).encode())
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def curl(host: testinfra.host.Host, path: str, body: dict | None = None) -> tuple[int, dict[str, str], str]:
    args = "-s -i"
    if body is not None:
        args += f" -X POST -H 'Content-Type: application/json' --data '{json.dumps(body)}'"
    raw = host.check_output(f"curl {args} http://127.0.0.1:8000{path}")
    head, _, payload = raw.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.25)


@pytest.fixture
def stub_qwen(host: testinfra.host.Host):
    host.check_output(f"cat > /tmp/stub.py <<'EOF'\n{STUB}\nEOF")
    host.check_output("systemd-run --unit stub-qwen python3 /tmp/stub.py 8011")
    try:
        wait_for(lambda: json.loads(curl(host, "/health")[2])["models"]["tiny-qwen"] == "ready")
        yield
    finally:
        host.run("systemctl stop stub-qwen")


def test_router_unit_is_enabled_and_running(host: testinfra.host.Host) -> None:
    service = host.service("llm-router")
    assert service.is_enabled
    assert service.is_running
    unit = host.file("/etc/systemd/system/llm-router.service")
    assert unit.contains("Ansible managed")
    assert unit.contains(
        "ExecStartPre=/usr/sbin/nginx -t -q -e /var/log/llm-router/error.log -c /etc/llm-router/nginx.conf"
    )


def test_listens_on_port_8000_on_all_addresses(host: testinfra.host.Host) -> None:
    assert host.socket("tcp://0.0.0.0:8000").is_listening


def test_distribution_nginx_site_is_off(host: testinfra.host.Host) -> None:
    nginx = host.service("nginx")
    assert not nginx.is_running
    assert not nginx.is_enabled
    assert not host.socket("tcp://0.0.0.0:80").is_listening


def test_routes_rendered_from_the_catalog(host: testinfra.host.Host) -> None:
    config = json.loads(host.file("/etc/llm-router/config.json").content_string)
    assert [(m["key"], m["backends"], m["served_names"]) for m in config["models"]] == [
        ("tiny-qwen", [{"host": "127.0.0.1", "port": 8011}], ["tiny-qwen3"]),
        ("tiny-nemotron", [{"host": "127.0.0.1", "port": 8012}], ["tiny-nemotron"]),
    ]
    assert config["api_keys_file"] is None
    assert not host.file("/etc/llm-router/api_keys").exists


def test_without_backends_health_and_requests_are_503(host: testinfra.host.Host) -> None:
    status, _, body = curl(host, "/health")
    assert status == 503
    assert json.loads(body)["models"] == {"tiny-qwen": "down", "tiny-nemotron": "down"}
    status, headers, body = curl(host, "/v1/chat/completions", {"model": "tiny-qwen3", "messages": []})
    assert status == 503
    assert headers["retry-after"] == "5"
    assert json.loads(body)["error"]["code"] == "backend_not_ready"
    assert curl(host, "/v1/models")[0] == 503


def test_unknown_model_is_404(host: testinfra.host.Host) -> None:
    status, _, body = curl(host, "/v1/chat/completions", {"model": "llama"})
    assert status == 404
    assert "tiny-qwen3, tiny-nemotron" in json.loads(body)["error"]["message"]


def test_ready_backend_is_routed_through_the_service(host: testinfra.host.Host, stub_qwen) -> None:
    status, _, body = curl(host, "/v1/chat/completions", {"model": "Tiny-QWEN3-alias", "messages": []})
    assert status == 200
    assert json.loads(body) == {"backend": "stub-qwen", "path": "/v1/chat/completions"}
    status, _, body = curl(host, "/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["tiny-qwen3"]

    def routed_request_logged() -> bool:
        log = host.file("/var/log/llm-router/access.log").content_string
        entries = [json.loads(line) for line in log.splitlines()]
        return any(
            e["model"] == "tiny-qwen" and e["status"] == 200 and e["upstream"] == "127.0.0.1:8011" for e in entries
        )

    # The access log is buffered and flushed every second.
    wait_for(routed_request_logged, timeout=5)
