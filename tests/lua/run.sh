#!/usr/bin/env bash
# Runs the router's Lua unit tests (tests/lua/*_spec.lua) with busted under LuaJIT 2.1, the
# flavour nginx's lua module embeds. Debian's `luajit` package cannot be used: it conflicts with
# libluajit2-5.1-2, which libnginx-mod-http-lua needs. `luajit2` (OpenResty's branch) installs
# the same /usr/bin/luajit without that conflict, and busted's Debian package is plain Lua 5.1
# code, so /usr/bin/busted is run as a script by that interpreter (its shebang would pick the
# system `lua`, a different version). tests/run.sh installs the packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
luajit -v
exec luajit /usr/bin/busted --output=plainTerminal "$@" tests/lua
