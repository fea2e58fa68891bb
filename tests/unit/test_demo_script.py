"""tools/demo.sh refuses bad arguments and a taken port before it starts anything."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tools" / "demo.sh"


def run_demo(*args: str, port: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    if port is not None:
        env["DEMO_PORT"] = port
    # A check that let the run through would start building and deploying: the timeout stops it.
    return subprocess.run([str(DEMO), *args], env=env, capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize("args", [(), ("bogus",), ("up", "extra")])
def test_bad_arguments_print_usage(args: tuple[str, ...]) -> None:
    result = run_demo(*args)
    assert result.returncode == 2
    assert "usage: tools/demo.sh up|down" in result.stderr
    assert "DEMO_PORT" in result.stderr


def test_port_that_is_no_number_is_refused() -> None:
    result = run_demo("up", port="80a")
    assert result.returncode == 1
    assert "DEMO_PORT='80a' is not a port number" in result.stderr
    assert "==>" not in result.stdout


def test_taken_port_is_refused_naming_the_variable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = str(sock.getsockname()[1])
        result = run_demo("up", port=port)
    assert result.returncode == 1
    # Either the port is taken, or a demo container already exists on another port: both name
    # DEMO_PORT, and neither starts anything.
    assert "DEMO_PORT=" in result.stderr
    assert "==>" not in result.stdout
