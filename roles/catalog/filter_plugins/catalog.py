"""Resolve and check the model/profile catalog.

Pure functions over plain data, so they are unit-tested without Ansible; the role exposes them
as the filters ``catalog_resolve`` and ``catalog_problems``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

# Every key a model may carry. A key outside this set is almost always a typo in an override
# (``gpu_memory_utilisation``) that would otherwise be ignored without a word.
MODEL_KEYS = frozenset(
    {
        "repo",
        "revision",
        "source",
        "local_path",
        "url",
        "sha256",
        "allow_patterns",
        "ignore_patterns",
        "served_names",
        "route_matches",
        "port",
        "accelerator",
        "architectures",
        "gpus",
        "gpu_memory_utilization",
        "max_model_len",
        "max_num_seqs",
        "tensor_parallel_size",
        "dtype",
        "quantization",
        "kv_cache_dtype",
        "trust_remote_code",
        "enable_auto_tool_choice",
        "tool_call_parser",
        "reasoning_parser",
        "limit_mm_per_prompt",
        "extra_args",
        "extra_env",
        "size_gb",
        "startup_timeout",
    }
)
PROFILE_KEYS = frozenset({"description", "models", "overrides"})
ACCELERATORS = frozenset({"nvidia", "cpu"})
SOURCES = frozenset({"hf", "local", "url"})


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in; dicts merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merged_profiles(profiles: dict[str, Any], profile_overrides: dict[str, Any] | None) -> dict[str, Any]:
    return deep_merge(profiles, profile_overrides)


def catalog_resolve(
    models: dict[str, Any],
    profiles: dict[str, Any],
    defaults: dict[str, Any],
    profile: str,
    model_overrides: dict[str, Any] | None = None,
    profile_overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The profile's models, in profile order, each fully merged and carrying its ``key``.

    Precedence, lowest first: model defaults, the catalog entry, the profile's overrides, the
    user's ``model_overrides``. Models missing from the catalog resolve to their overrides only,
    so that ``catalog_problems`` can name them instead of this function failing.
    """
    all_models = deep_merge(models, model_overrides)
    chosen = merged_profiles(profiles, profile_overrides).get(profile) or {}
    profile_tweaks = chosen.get("overrides") or {}
    resolved = []
    for key in chosen.get("models") or []:
        model = deep_merge(defaults, all_models.get(key) or {})
        model = deep_merge(model, profile_tweaks.get(key))
        model = deep_merge(model, (model_overrides or {}).get(key))
        model["key"] = key
        if model.get("gpus") is None and model.get("accelerator") == "nvidia":
            model["gpus"] = list(range(int(model.get("tensor_parallel_size") or 1)))
        resolved.append(model)
    return resolved


def profile_problems(
    models: dict[str, Any],
    profiles: dict[str, Any],
    profile: str,
    model_overrides: dict[str, Any] | None = None,
    profile_overrides: dict[str, Any] | None = None,
) -> list[str]:
    """Problems with the choice of profile and its model list, before any merge matters."""
    all_profiles = merged_profiles(profiles, profile_overrides)
    valid = ", ".join(sorted(all_profiles))
    if not profile:
        return [f"No profile given. Run with -e profile=<name>; valid profiles: {valid}."]
    if profile not in all_profiles:
        return [f"Unknown profile '{profile}'. Valid profiles: {valid}."]
    problems = []
    spec = all_profiles[profile] or {}
    for key in sorted(set(spec) - PROFILE_KEYS):
        problems.append(f"Profile '{profile}' has unknown key '{key}'; allowed: {', '.join(sorted(PROFILE_KEYS))}.")
    known_models = deep_merge(models, model_overrides)
    model_list = spec.get("models") or []
    if not model_list:
        problems.append(f"Profile '{profile}' lists no models; give it `models: [<model key>, ...]`.")
    for key in model_list:
        if key not in known_models:
            problems.append(
                f"Profile '{profile}' uses model '{key}', which is not in the catalog. "
                f"Known models: {', '.join(sorted(known_models))}; add it under catalog_model_overrides."
            )
    for key in sorted(set(spec.get("overrides") or {}) - set(model_list)):
        problems.append(f"Profile '{profile}' overrides model '{key}', which it does not list in `models`.")
    return problems


def _model_problems(model: dict[str, Any]) -> list[str]:
    key = model["key"]
    problems = []
    for unknown in sorted(set(model) - MODEL_KEYS - {"key"}):
        problems.append(
            f"Model '{key}' has unknown setting '{unknown}' (a typo?); allowed: {', '.join(sorted(MODEL_KEYS))}."
        )
    if not isinstance(model.get("repo"), str) or not model.get("repo"):
        problems.append(f"Model '{key}' needs `repo` (e.g. Qwen/Qwen3-Coder-30B-A3B-Instruct).")
    names = model.get("served_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        problems.append(f"Model '{key}' needs `served_names`: a non-empty list of names.")
    matches = model.get("route_matches")
    if not isinstance(matches, list) or not all(isinstance(m, str) and m for m in matches):
        problems.append(f"Model '{key}' needs `route_matches`: a list of non-empty strings (may be empty).")
    port = model.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        problems.append(f"Model '{key}' has port {port!r}; set `port` to an integer between 1 and 65535.")
    if model.get("accelerator") not in ACCELERATORS:
        problems.append(
            f"Model '{key}' has accelerator {model.get('accelerator')!r}; use one of {', '.join(sorted(ACCELERATORS))}."
        )
    if model.get("source") not in SOURCES:
        problems.append(f"Model '{key}' has source {model.get('source')!r}; use one of {', '.join(sorted(SOURCES))}.")
    for setting in ("max_model_len", "max_num_seqs", "tensor_parallel_size", "startup_timeout"):
        value = model.get(setting)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"Model '{key}' has {setting} {value!r}; it must be a positive integer.")
    util = model.get("gpu_memory_utilization")
    if not isinstance(util, (int, float)) or isinstance(util, bool) or not 0 < util <= 1:
        problems.append(f"Model '{key}' has gpu_memory_utilization {util!r}; it must be in (0, 1].")
    gpus = model.get("gpus")
    tp = model.get("tensor_parallel_size")
    if model.get("accelerator") == "nvidia" and isinstance(tp, int) and isinstance(gpus, list) and len(gpus) != tp:
        problems.append(f"Model '{key}' runs tensor_parallel_size {tp} on gpus {gpus}; list exactly {tp} GPU indexes.")
    return problems


def _gpu_budget_problems(models: list[dict[str, Any]], budget: float) -> list[str]:
    claims: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for model in models:
        util = model.get("gpu_memory_utilization")
        if model.get("accelerator") != "nvidia" or not isinstance(util, (int, float)):
            continue
        for gpu in model.get("gpus") or []:
            claims[gpu].append((model["key"], util))
    problems = []
    for gpu, users in sorted(claims.items()):
        total = sum(util for _, util in users)
        if len(users) > 1 and total > budget + 1e-9:
            parts = " + ".join(f"{key} {util}" for key, util in users)
            problems.append(
                f"GPU {gpu} is shared by {parts} = {total:.2f} of its memory, over the budget of {budget}. "
                "Lower their gpu_memory_utilization (catalog_model_overrides) or place them on different `gpus`."
            )
    return problems


def _uniqueness_problems(models: list[dict[str, Any]]) -> list[str]:
    problems = []
    ports: dict[Any, list[str]] = defaultdict(list)
    names: dict[str, list[str]] = defaultdict(list)
    for model in models:
        ports[model.get("port")].append(model["key"])
        for name in model.get("served_names") or []:
            if isinstance(name, str):
                names[name.lower()].append(model["key"])
    for port, keys in ports.items():
        if len(keys) > 1:
            problems.append(f"Models {' and '.join(keys)} both use port {port}; give each its own `port`.")
    for name, keys in names.items():
        if len(set(keys)) > 1:
            problems.append(f"Models {' and '.join(keys)} both serve the name '{name}'; served names must be unique.")
    return problems


def route_for(name: str, models: list[dict[str, Any]]) -> list[str]:
    """Keys of the models a request for ``name`` would go to: one, none, or several on a tie.

    Exact served name first, then the longest case-insensitive substring among route_matches.
    """
    exact = [m["key"] for m in models if name in (m.get("served_names") or [])]
    return exact or substring_route(name, models)


def substring_route(name: str, models: list[dict[str, Any]]) -> list[str]:
    """Keys of the models whose longest route match contained in ``name`` (any case) is longest."""
    lowered = name.lower()
    best, winners = 0, []
    for model in models:
        for match in model.get("route_matches") or []:
            if not isinstance(match, str) or match.lower() not in lowered:
                continue
            if len(match) > best:
                best, winners = len(match), [model["key"]]
            elif len(match) == best and model["key"] not in winners:
                winners.append(model["key"])
    return winners


def _route_problems(models: list[dict[str, Any]]) -> list[str]:
    problems = []
    owners: dict[str, list[str]] = defaultdict(list)
    for model in models:
        for match in model.get("route_matches") or []:
            if isinstance(match, str):
                owners[match.lower()].append(model["key"])
    for match, keys in owners.items():
        if len(set(keys)) > 1:
            problems.append(
                f"Models {' and '.join(sorted(set(keys)))} share the route match '{match}'; a request naming "
                "it could go to either. Make the matches distinct (catalog_model_overrides: <key>: route_matches)."
            )
    for model in models:
        for name in model.get("served_names") or []:
            if not isinstance(name, str):
                continue
            # Clients often change the case of a name; its substring route must still be this model.
            winners = substring_route(name, models)
            if len(winners) > 1:
                problems.append(
                    f"Served name '{name}' of model '{model['key']}' is matched equally well by the route "
                    f"matches of {' and '.join(winners)}; give one of them a longer, more specific match."
                )
            elif winners and winners != [model["key"]]:
                problems.append(
                    f"Served name '{name}' of model '{model['key']}', written in another case, would be "
                    f"routed to '{winners[0]}' by its route matches; give '{model['key']}' a longer match "
                    "contained in that name."
                )
    return problems


def catalog_problems(models: list[dict[str, Any]], gpu_memory_budget: float = 0.95) -> list[str]:
    """Everything wrong with a resolved profile, each message saying what to change."""
    problems: list[str] = []
    for model in models:
        problems.extend(_model_problems(model))
    problems.extend(_uniqueness_problems(models))
    problems.extend(_route_problems(models))
    problems.extend(_gpu_budget_problems(models, gpu_memory_budget))
    return problems


def _router_backends(
    models: list[dict[str, Any]], router_host: str, backend_hosts: list[str], hostvars: Any
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Where the router on ``router_host`` sends each model: every backend host serving it.

    A backend host's own resolved models give its ports (host overrides may differ); one whose
    catalog was not resolved in this run (``--limit``) is taken to serve the router's models. The
    router's own host is reached on 127.0.0.1 unless it sets ``llm_backend_address``; any other
    backend must set it, since its vLLM listens on loopback only without it.
    """
    backends: dict[str, list[dict[str, Any]]] = {model["key"]: [] for model in models}
    problems: list[str] = []
    for host in backend_hosts:
        variables = hostvars.get(host, {})
        served = variables.get("catalog_profile_models") or models
        address = variables.get("llm_backend_address")
        if not address and host == router_host:
            address = "127.0.0.1"
        if not address:
            problems.append(
                f"Host {host} serves models for the router on {router_host}, but its vLLM listens on "
                f"127.0.0.1 only: set llm_backend_address for {host} (the address {router_host} "
                "reaches it on; see inventories/example)."
            )
            continue
        for model in served:
            if model["key"] in backends:
                backends[model["key"]].append({"host": str(address), "port": int(model["port"])})
    for key, found in backends.items():
        if not found and not problems:
            problems.append(
                f"No host in llm_backends serves model {key!r} for the router on {router_host}: add a host "
                "that serves the profile to the llm_backends group."
            )
    return backends, problems


def router_backends(
    models: list[dict[str, Any]], router_host: str, backend_hosts: list[str], hostvars: Any
) -> dict[str, list[dict[str, Any]]]:
    return _router_backends(models, router_host, backend_hosts, hostvars)[0]


def router_backend_problems(
    models: list[dict[str, Any]], router_host: str, backend_hosts: list[str], hostvars: Any
) -> list[str]:
    return _router_backends(models, router_host, backend_hosts, hostvars)[1]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "catalog_resolve": catalog_resolve,
            "catalog_profile_problems": profile_problems,
            "catalog_problems": catalog_problems,
            "catalog_router_backends": router_backends,
            "catalog_router_backend_problems": router_backend_problems,
        }
