"""The vllm role's arguments, environment and units for the GPU profiles and the container runtime,
rendered with the role's own templates and checked with `systemd-analyze verify` on this machine.
Stand-in: these profiles need an NVIDIA GPU to converge, which the test machines lack; the tiny
models' units are converged and run for real in the `stack` and `fleet` Molecule scenarios."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def render(tmp_path: Path, env: dict[str, str], profile: str, inventory: Path | None = None, **extra: Any) -> Path:
    out = tmp_path / "rendered"
    out.mkdir()
    # ExecStart's program must exist for `systemd-analyze verify`.
    python = tmp_path / "opt-vllm" / "current" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to("/usr/bin/python3")
    variables = {
        "profile": profile,
        "render_dir": str(out),
        "vllm_install_root": str(tmp_path / "opt-vllm"),
        "vllm_weights_dir": "/srv/model_weights",
        "_vllm_libexec": str(ROOT / "roles" / "vllm" / "files"),
        "systemd_version": 252,
        **extra,
    }
    result = subprocess.run(
        ["ansible-playbook", str(ROOT / "tests" / "integration" / "render_vllm.yml"), "-e", json.dumps(variables)]
        + (["-i", str(inventory)] if inventory else []),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return out


def verify(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stderr.splitlines() if "vllm.target" not in line]
    assert result.returncode == 0 and not problems, result.stderr


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory, tool_env: dict[str, str]) -> Path:
    return render(tmp_path_factory.mktemp("multi"), tool_env, "multi")


def test_multi_arguments_come_from_the_catalog_and_the_profile(multi: Path) -> None:
    qwen = yaml.safe_load((multi / "qwen.yaml").read_text())
    nemotron = yaml.safe_load((multi / "nemotron.yaml").read_text())
    assert qwen == {
        "model": "/srv/model_weights/Qwen/Qwen3-Coder-30B-A3B-Instruct",
        "served-model-name": ["Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-coder"],
        "host": "127.0.0.1",
        "port": 8001,
        "max-model-len": 32768,
        "max-num-seqs": 4,
        "gpu-memory-utilization": 0.55,
        "tensor-parallel-size": 1,
        "dtype": "auto",
        "kv-cache-dtype": "auto",
        "trust-remote-code": False,
        "enable-auto-tool-choice": True,
        "tool-call-parser": "qwen3_coder",
    }
    assert nemotron["gpu-memory-utilization"] == 0.35
    assert nemotron["trust-remote-code"] is True
    assert nemotron["kv-cache-dtype"] == "fp8"
    assert nemotron["reasoning-parser"] == "nemotron_v3"
    assert nemotron["tool-call-parser"] == "qwen3_coder"


def test_multi_environment_pins_the_gpu_and_never_downloads(multi: Path) -> None:
    env = (multi / "nemotron.env").read_text().splitlines()
    assert "HF_HUB_OFFLINE=1" in env
    assert "CUDA_VISIBLE_DEVICES=0" in env
    assert "NCCL_SOCKET_IFNAME=lo" in env  # no NCCL socket beyond loopback (GPU only: not run here)
    assert 'VLLM_USE_FLASHINFER_MOE_FP4="1"' in env
    assert "VLLM_CACHE_ROOT=/var/cache/vllm/nemotron/vllm" in env


@pytest.mark.parametrize("key", ["qwen", "nemotron"])
def test_multi_units_pass_systemd_analyze_verify(multi: Path, key: str) -> None:
    verify(multi / f"vllm-{key}.service")


def test_gpu_unit_reaches_the_nvidia_devices_only(multi: Path) -> None:
    unit = (multi / "vllm-qwen.service").read_text().splitlines()
    assert "DevicePolicy=closed" in unit
    assert "DeviceAllow=char-nvidia-uvm rw" in unit
    assert "PrivateDevices=yes" not in unit


def test_models_sharing_a_gpu_start_one_after_another(multi: Path) -> None:
    assert "After=vllm-qwen.service" in (multi / "vllm-nemotron.service").read_text().splitlines()
    assert not any(line.startswith("After=vllm-") for line in (multi / "vllm-qwen.service").read_text().splitlines())


def test_models_on_separate_gpus_start_together(tmp_path: Path, tool_env: dict[str, str]) -> None:
    out = render(tmp_path, tool_env, "multi", catalog_model_overrides={"nemotron": {"gpus": [1]}})
    assert not any(line.startswith("After=vllm-") for line in (out / "vllm-nemotron.service").read_text().splitlines())
    assert "CUDA_VISIBLE_DEVICES=1" in (out / "nemotron.env").read_text().splitlines()


def test_backoff_settings_only_where_systemd_knows_them(multi: Path, tmp_path: Path, tool_env: dict[str, str]) -> None:
    assert "RestartSteps=5" not in (multi / "vllm-qwen.service").read_text()
    newer = render(tmp_path, tool_env, "qwen", systemd_version=255)
    assert "RestartSteps=5" in (newer / "vllm-qwen.service").read_text().splitlines()


def test_extra_args_are_quoted_for_systemd(tmp_path: Path, tool_env: dict[str, str]) -> None:
    odd = '{"max_tokens": 100%}'
    out = render(
        tmp_path,
        tool_env,
        "qwen",
        catalog_model_overrides={"qwen": {"extra_args": ["--override-generation-config", odd]}},
    )
    unit = out / "vllm-qwen.service"
    verify(unit)
    assert '"--override-generation-config" "{\\"max_tokens\\": 100%%}"' in unit.read_text()


def test_container_runtime_unit(tmp_path: Path, tool_env: dict[str, str]) -> None:
    out = render(tmp_path, tool_env, "multi", vllm_runtime="container", vllm_drain_urls=["http://127.0.0.1:8000/drain"])
    unit = out / "vllm-nemotron.service"
    verify(unit)
    # The router stops sending requests, and those running finish, before podman stops the container.
    stops = [line.split()[0] for line in unit.read_text().splitlines() if line.startswith("ExecStop=")]
    assert stops == [f"ExecStop={ROOT}/roles/vllm/files/vllm-drain", "ExecStop=/usr/bin/podman"], stops
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith("ExecStart=/usr/bin/podman run --rm --name vllm-nemotron --network host")
    assert "--device nvidia.com/gpu=0 " in exec_start
    assert "--env VLLM_USE_FLASHINFER_MOE_FP4 " in exec_start
    assert "--volume /srv/model_weights/nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4:" in exec_start
    assert exec_start.endswith("docker.io/vllm/vllm-openai:v0.33.0 serve --config /etc/vllm/nemotron.yaml")


def test_units_drain_through_every_router_as_it_knows_this_host(tmp_path: Path, tool_env: dict[str, str]) -> None:
    # This host serves and routes; three more routers: one with its own address and port, one by
    # its inventory name, one at an IPv6 address.
    inventory = tmp_path / "hosts.yml"
    routers = {
        "localhost": {},
        "router-2": {"llm_router_address": "10.0.0.2", "router_listen": "0.0.0.0:9000"},
        "router-3": {},
        "router-4": {"llm_router_address": "fd00::4"},
    }
    backends = {
        "localhost": {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "llm_backend_address": "10.0.0.11",
        }
    }
    inventory.write_text(
        yaml.safe_dump({"all": {"children": {"llm_backends": {"hosts": backends}, "llm_routers": {"hosts": routers}}}})
    )
    out = render(tmp_path, tool_env, "cpu-demo", inventory=inventory)
    unit = out / "vllm-tiny-qwen.service"
    verify(unit)
    drain = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStop="))
    assert drain.split(" ", 1)[1] == (
        '--router "http://10.0.0.11:8000/drain" --router "http://10.0.0.2:9000/drain" '
        '--router "http://router-3:8000/drain" --router "http://[fd00::4]:8000/drain" '
        "--port 8011 --metrics http://127.0.0.1:8011/metrics --timeout 30"
    )
