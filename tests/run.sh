#!/usr/bin/env bash
# The project's test command (`make test`), also what CI runs. On a fresh Debian 12 machine it
# installs the system packages and the pinned tools, lints, builds the systemd test-host image
# and runs pytest (unit tests, real ansible-playbook runs, Molecule scenarios).
#   tests/run.sh         everything
#   tests/run.sh lint    system packages, tools and lint only
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
only="${1:-all}"

stage_started=0
stage() {
  stage_done
  stage_name="$1"
  stage_started=$(date +%s)
  printf '\n==> %s\n' "$stage_name"
}
stage_done() {
  if [ "$stage_started" -ne 0 ]; then
    printf '==> %s: %ss\n' "$stage_name" "$(($(date +%s) - stage_started))"
    timings+=("$(printf '%-28s %5ss' "$stage_name" "$(($(date +%s) - stage_started))")")
  fi
}
timings=()
total_started=$(date +%s)

stage "system packages"
# podman, runc, debootstrap: the systemd test hosts. nginx and the Lua packages: the router's
# integration tests run the real nginx + Lua on this machine. luajit2, busted, luacheck: Lua tests.
# systemd: `systemd-analyze verify` checks rendered units (the machine's PID 1 need not be systemd).
# gpg: the nvidia scenario signs a stand-in repository key on this machine.
packages=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs systemd gpg
  nginx-light libnginx-mod-http-ndk libnginx-mod-http-lua lua-cjson lua-resty-core lua-resty-lrucache
  luajit2 lua-busted lua-check)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
podman --version

stage "python tools (.venv)"
tools/venv.sh
export PATH="$root/.venv/bin:$PATH"
ansible_version="$(ansible --version)"
echo "${ansible_version%%$'\n'*}"

stage "lint"
yamllint --strict .
ansible-lint --offline -q
ruff check .
ruff format --check .
luacheck -q roles/router/files/lua tests/lua
python tools/role_docs.py --check

if [ "$only" = all ]; then
  stage "test-host image"
  export CONTAINERS_CONF="$root/tests/harness/containers.conf"
  export CONTAINERS_STORAGE_CONF="$root/tests/harness/storage.conf"
  TESTHOST_IMAGE="$(tests/harness/build-image.sh)"
  export TESTHOST_IMAGE
  echo "$TESTHOST_IMAGE"

  stage "pytest"
  # Two workers: the scenarios that run vLLM go one after the other on one of them (their
  # xdist_group), everything else beside them on the other.
  pytest --durations=0 -n 2 --dist loadgroup
fi

stage_done
printf '\nStage durations:\n'
printf '  %s\n' "${timings[@]}"
printf '  %-28s %5ss\n' total "$(($(date +%s) - total_started))"
