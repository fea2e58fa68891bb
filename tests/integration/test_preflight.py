"""Real `ansible-playbook site.yml` runs against this machine (inventories/local) with bad input.

Every one must fail in the preflight play, before the first play that changes a host starts, with
a message that says what to change.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_CHANGING_PLAY = "PLAY [Prepare the serving hosts]"


def has_nvidia_gpu() -> bool:
    devices = Path("/sys/bus/pci/devices")
    return any((d / "vendor").read_text().strip() == "0x10de" for d in devices.iterdir()) if devices.is_dir() else False


def site(tool_env: dict[str, str], *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = ["ansible-playbook", "site.yml", *args]
    if inventory:
        command += ["-i", str(inventory)]
    return subprocess.run(command, cwd=ROOT, env=tool_env, capture_output=True, text=True, check=False, timeout=300)


def overrides(models: dict | None = None, profiles: dict | None = None) -> list[str]:
    extra = {"catalog_model_overrides": models or {}, "catalog_profile_overrides": profiles or {}}
    return ["-e", json.dumps(extra)]


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = " ".join(result.stdout.split())
    assert result.returncode != 0, output
    for fragment in fragments:
        assert fragment in output, output
    assert FIRST_CHANGING_PLAY not in result.stdout, "a host-changing play started"
    assert "changed=0" in output


def test_unknown_profile_lists_the_valid_ones(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=nope"),
        "Unknown profile 'nope'. Valid profiles: cpu-demo, multi, nemotron, nemotron-vl, qwen.",
    )


def test_missing_profile_says_how_to_give_one(tool_env):
    assert_refused(site(tool_env), "No profile given. Run with -e profile=<name>")


def test_gpu_profile_on_a_host_without_nvidia_gpu_suggests_cpu_demo(tool_env):
    if has_nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU; the refusal needs a host without one")
    assert_refused(
        site(tool_env, "-e", "profile=qwen"),
        "Profile 'qwen' needs 1 NVIDIA GPU(s), but the PCI probe",
        "found 0 on localhost",
        "run the cpu-demo profile: -e profile=cpu-demo",
    )


def test_gpu_memory_over_budget(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=multi", *overrides({"qwen": {"gpu_memory_utilization": 0.7}})),
        "GPU 0 is shared by qwen 0.7 + nemotron 0.35 = 1.05 of its memory, over the budget of 0.95",
    )


def test_duplicate_ports_and_served_names(tool_env):
    result = site(
        tool_env,
        "-e",
        "profile=cpu-demo",
        *overrides({"tiny-nemotron": {"port": 8011, "served_names": ["tiny-qwen3"]}}),
    )
    assert_refused(
        result,
        "Models tiny-qwen and tiny-nemotron both use port 8011",
        "both serve the name 'tiny-qwen3'",
    )


def test_ambiguous_route_match(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", *overrides({"tiny-nemotron": {"route_matches": ["Qwen"]}})),
        "share the route match 'qwen'",
    )


def test_typo_in_an_override(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", *overrides({"tiny-qwen": {"max_model_length": 4096}})),
        "Model 'tiny-qwen' has unknown setting 'max_model_length' (a typo?)",
    )


def test_profile_with_a_model_missing_from_the_catalog(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=mine", *overrides(profiles={"mine": {"models": ["tiny-qwen", "llama"]}})),
        "Profile 'mine' uses model 'llama', which is not in the catalog",
    )


def test_architecture_the_models_do_not_support(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", *overrides({"tiny-qwen": {"architectures": ["riscv64"]}})),
        "Profile 'cpu-demo' cannot run on this",
        "tiny-qwen supports riscv64",
    )


def test_override_of_the_wrong_type_is_refused_by_the_argument_spec(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", "-e", "catalog_model_overrides=oops"),
        "catalog_model_overrides",
        "dict",
    )


def test_overrides_from_inventory_vars_reach_the_catalog(tool_env, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n"
        "  hosts:\n"
        "    localhost:\n"
        "      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
        "      catalog_model_overrides:\n"
        "        tiny-nemotron:\n"
        "          port: 8011\n"
    )
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", inventory=inventory),
        "Models tiny-qwen and tiny-nemotron both use port 8011",
    )


def test_valid_profile_passes_preflight(tool_env):
    # --tags preflight runs only the `always`-tagged catalog role: nothing on this machine changes.
    result = site(tool_env, "-e", "profile=cpu-demo", "--tags", "preflight")
    assert result.returncode == 0, result.stdout
    assert "failed=0" in result.stdout
    assert "changed=0" in result.stdout


def test_hf_source_without_revision(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", *overrides({"tiny-qwen": {"source": "hf", "revision": ""}})),
        "Model tiny-qwen (source hf) needs a revision",
    )


def test_local_weights_directory_missing_on_the_control_node(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", *overrides({"tiny-nemotron": {"local_path": "/nonexistent/tiny"}})),
        "Model tiny-nemotron: the directory /nonexistent/tiny does not exist on the control node",
        "make tiny-models",
    )


def test_url_source_without_checksum(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", *overrides({"tiny-qwen": {"source": "url", "url": "http://x/a.tgz"}})),
        "Model tiny-qwen (source url) needs url and sha256 (64 hex digits)",
    )


def test_drain_longer_than_the_stop_allows(tool_env):
    assert_refused(
        site(tool_env, "-e", "profile=cpu-demo", "-e", "vllm_drain_timeout=55"),
        "vllm_drain_timeout (55) must be a whole number of seconds, 0 or more,",
        "and at least 10 s below vllm_stop_timeout (60)",
    )
