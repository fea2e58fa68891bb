"""The catalog's resolution and checks, on the real catalog data from the role's defaults."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def resolve(catalog_plugin: ModuleType, catalog_defaults: dict):
    def _resolve(profile: str, model_overrides: dict | None = None, profile_overrides: dict | None = None):
        return catalog_plugin.catalog_resolve(
            catalog_defaults["catalog_models"],
            catalog_defaults["catalog_profiles"],
            catalog_defaults["catalog_model_defaults"],
            profile,
            model_overrides,
            profile_overrides,
        )

    return _resolve


@pytest.fixture
def problems(catalog_plugin: ModuleType, resolve):
    def _problems(profile: str, model_overrides: dict | None = None, profile_overrides: dict | None = None):
        return catalog_plugin.catalog_problems(resolve(profile, model_overrides, profile_overrides), 0.95)

    return _problems


def by_key(models: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["key"]: m for m in models}


@pytest.mark.parametrize("profile", ["qwen", "nemotron", "nemotron-vl", "multi", "cpu-demo"])
def test_every_seed_profile_resolves_without_problems(profile, catalog_plugin, catalog_defaults, problems):
    assert (
        catalog_plugin.profile_problems(
            catalog_defaults["catalog_models"], catalog_defaults["catalog_profiles"], profile
        )
        == []
    )
    assert problems(profile) == []


def test_defaults_apply_to_every_model(resolve):
    qwen = by_key(resolve("qwen"))["qwen"]
    assert qwen["gpu_memory_utilization"] == 0.9
    assert qwen["max_model_len"] == 32768
    assert qwen["max_num_seqs"] == 4
    assert qwen["tensor_parallel_size"] == 1
    assert qwen["gpus"] == [0]


def test_qwen_keeps_tool_calling_with_the_qwen3_coder_parser(resolve):
    qwen = by_key(resolve("qwen"))["qwen"]
    assert qwen["enable_auto_tool_choice"] is True
    assert qwen["tool_call_parser"] == "qwen3_coder"


def test_multi_shares_one_gpu_with_tool_calling_still_on(resolve):
    models = by_key(resolve("multi"))
    assert list(models) == ["qwen", "nemotron"]
    assert models["qwen"]["gpu_memory_utilization"] == 0.55
    assert models["nemotron"]["gpu_memory_utilization"] == 0.35
    assert models["qwen"]["gpus"] == models["nemotron"]["gpus"] == [0]
    assert all(m["enable_auto_tool_choice"] for m in models.values())


def test_cpu_demo_names_route_to_the_right_tiny_model(catalog_plugin, resolve):
    models = resolve("cpu-demo")
    assert all(m["accelerator"] == "cpu" for m in models)
    assert catalog_plugin.route_for("Tiny-Qwen3", models) == ["tiny-qwen"]
    assert catalog_plugin.route_for("my-nemotron-test", models) == ["tiny-nemotron"]
    assert catalog_plugin.route_for("llama", models) == []


def test_longest_match_wins_between_nemotron_and_nemotron_vl(catalog_plugin, resolve):
    models = resolve("multi", profile_overrides={"multi": {"models": ["nemotron", "nemotron-vl"]}})
    assert catalog_plugin.route_for("nvidia/nvidia-nemotron-nano-12b-v2-vl-bf16", models) == ["nemotron-vl"]
    assert catalog_plugin.route_for("NEMOTRON-3-NANO", models) == ["nemotron"]


def test_user_override_changes_one_key_and_keeps_the_rest(resolve):
    qwen = by_key(resolve("qwen", {"qwen": {"max_model_len": 65536, "extra_env": {"FOO": "1"}}}))["qwen"]
    assert qwen["max_model_len"] == 65536
    assert qwen["extra_env"] == {"FOO": "1"}
    assert qwen["repo"] == "Qwen/Qwen3-Coder-30B-A3B-Instruct"
    assert qwen["tool_call_parser"] == "qwen3_coder"


def test_nested_settings_merge_deeply(resolve):
    nemotron = by_key(resolve("nemotron", {"nemotron": {"extra_env": {"EXTRA": "x"}}}))["nemotron"]
    assert nemotron["extra_env"] == {
        "VLLM_USE_FLASHINFER_MOE_FP4": "1",
        "VLLM_FLASHINFER_MOE_BACKEND": "throughput",
        "EXTRA": "x",
    }


def test_user_model_override_wins_over_the_profile(resolve):
    models = by_key(resolve("multi", {"qwen": {"gpu_memory_utilization": 0.5}}))
    assert models["qwen"]["gpu_memory_utilization"] == 0.5
    assert models["nemotron"]["gpu_memory_utilization"] == 0.35


def test_users_add_a_model_and_a_profile(resolve, problems):
    new_model = {
        "gemma": {
            "repo": "google/gemma-3-27b-it",
            "served_names": ["gemma-3"],
            "route_matches": ["gemma"],
            "port": 8004,
        }
    }
    new_profile = {"gemma": {"models": ["gemma"]}}
    (gemma,) = resolve("gemma", new_model, new_profile)
    assert gemma["key"] == "gemma"
    assert gemma["max_num_seqs"] == 4
    assert problems("gemma", new_model, new_profile) == []


def test_catalog_data_is_not_mutated_by_resolution(resolve, catalog_defaults):
    resolve("multi", {"qwen": {"extra_env": {"X": "1"}}})
    assert "X" not in catalog_defaults["catalog_models"]["qwen"].get("extra_env", {})


def test_profile_problems_list_the_valid_profiles(catalog_plugin, catalog_defaults):
    models, profiles = catalog_defaults["catalog_models"], catalog_defaults["catalog_profiles"]
    (missing,) = catalog_plugin.profile_problems(models, profiles, "")
    assert "-e profile=<name>" in missing
    (unknown,) = catalog_plugin.profile_problems(models, profiles, "nope")
    assert unknown == "Unknown profile 'nope'. Valid profiles: cpu-demo, multi, nemotron, nemotron-vl, qwen."


def test_profile_with_an_unknown_model_names_it(catalog_plugin, catalog_defaults):
    found = catalog_plugin.profile_problems(
        catalog_defaults["catalog_models"],
        catalog_defaults["catalog_profiles"],
        "bad",
        None,
        {"bad": {"models": ["qwen", "llama"]}},
    )
    assert len(found) == 1
    assert "uses model 'llama', which is not in the catalog" in found[0]


def test_gpu_memory_over_budget_names_models_and_total(problems):
    (found,) = problems("multi", {"qwen": {"gpu_memory_utilization": 0.65}})
    assert "GPU 0 is shared by qwen 0.65 + nemotron 0.35 = 1.00" in found


def test_models_on_different_gpus_do_not_share_a_budget(problems):
    assert (
        problems(
            "multi", {"nemotron": {"gpus": [1], "gpu_memory_utilization": 0.9}, "qwen": {"gpu_memory_utilization": 0.9}}
        )
        == []
    )


def test_clashing_ports_and_names_are_reported(problems):
    found = problems("multi", {"nemotron": {"port": 8001, "served_names": ["qwen3-coder"]}})
    assert "Models qwen and nemotron both use port 8001; give each its own `port`." in found
    assert any("both serve the name 'qwen3-coder'" in p for p in found)


def test_shared_route_match_is_ambiguous(problems):
    found = problems("multi", {"nemotron": {"route_matches": ["nemotron", "QWEN"]}})
    assert any("share the route match 'qwen'" in p for p in found)


def test_served_name_routed_to_another_model_is_reported(problems):
    found = problems(
        "multi", {"nemotron": {"served_names": ["qwen-nemotron-distill"], "route_matches": ["qwen-nemotron"]}}
    )
    assert found == []
    found = problems("multi", {"qwen": {"served_names": ["qwen-nemotron-coder"]}})
    assert any("would be routed to 'nemotron'" in p for p in found)


def test_typo_in_a_setting_is_named(problems):
    (found,) = problems("qwen", {"qwen": {"gpu_memory_utilisation": 0.5}})
    assert "unknown setting 'gpu_memory_utilisation'" in found


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"port": 70000}, "set `port` to an integer between 1 and 65535"),
        ({"port": "8001"}, "set `port` to an integer"),
        ({"max_model_len": 0}, "max_model_len 0; it must be a positive integer"),
        ({"gpu_memory_utilization": 1.2}, "gpu_memory_utilization 1.2; it must be in (0, 1]"),
        ({"accelerator": "amd"}, "accelerator 'amd'; use one of cpu, nvidia"),
        ({"served_names": []}, "needs `served_names`"),
        ({"tensor_parallel_size": 2, "gpus": [0]}, "list exactly 2 GPU indexes"),
    ],
)
def test_bad_settings_say_what_to_change(problems, override, fragment):
    found = problems("qwen", {"qwen": override})
    assert any(fragment in p for p in found), found


def test_tensor_parallel_models_get_consecutive_gpus(resolve):
    (qwen,) = resolve("qwen", {"qwen": {"tensor_parallel_size": 2}})
    assert qwen["gpus"] == [0, 1]


# -- where the router sends each model -----------------------------------------------------------


def test_router_on_a_one_host_install_reaches_its_models_on_loopback(catalog_plugin, resolve):
    models = resolve("cpu-demo")
    hostvars = {"box": {"catalog_profile_models": models}}
    backends = catalog_plugin.router_backends(models, "box", ["box"], hostvars)
    assert backends == {
        "tiny-qwen": [{"host": "127.0.0.1", "port": 8011}],
        "tiny-nemotron": [{"host": "127.0.0.1", "port": 8012}],
    }
    assert catalog_plugin.router_backend_problems(models, "box", ["box"], hostvars) == []


def test_router_host_balances_a_model_over_every_backend_host_with_its_own_port(catalog_plugin, resolve):
    models = resolve("cpu-demo")
    hostvars = {
        "router": {"catalog_profile_models": models},
        "gpu-1": {"catalog_profile_models": models, "llm_backend_address": "10.0.0.1"},
        # A host override moved tiny-qwen's port on gpu-2; a host whose catalog was not resolved
        # in this run (--limit) serves the router's models.
        "gpu-2": {
            "catalog_profile_models": resolve("cpu-demo", {"tiny-qwen": {"port": 9011}}),
            "llm_backend_address": "gpu-2.lan",
        },
        "gpu-3": {"llm_backend_address": "10.0.0.3"},
    }
    backends = catalog_plugin.router_backends(models, "router", ["gpu-1", "gpu-2", "gpu-3"], hostvars)
    assert [(b["host"], b["port"]) for b in backends["tiny-qwen"]] == [
        ("10.0.0.1", 8011),
        ("gpu-2.lan", 9011),
        ("10.0.0.3", 8011),
    ]


def test_remote_backend_without_an_address_is_refused_with_what_to_set(catalog_plugin, resolve):
    models = resolve("cpu-demo")
    hostvars = {"router": {}, "gpu-1": {"catalog_profile_models": models}}
    problems = catalog_plugin.router_backend_problems(models, "router", ["gpu-1"], hostvars)
    assert len(problems) == 1
    assert "set llm_backend_address for gpu-1" in problems[0]


def test_model_that_no_backend_host_serves_is_refused(catalog_plugin, resolve):
    models = resolve("cpu-demo")
    only_qwen = [model for model in models if model["key"] == "tiny-qwen"]
    hostvars = {"router": {}, "gpu-1": {"catalog_profile_models": only_qwen, "llm_backend_address": "10.0.0.1"}}
    problems = catalog_plugin.router_backend_problems(models, "router", ["gpu-1"], hostvars)
    assert problems == [
        "No host in llm_backends serves model 'tiny-nemotron' for the router on router: add a host that serves "
        "the profile to the llm_backends group."
    ]
