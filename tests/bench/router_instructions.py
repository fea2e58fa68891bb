"""Instructions per request of plain nginx, the router and its diagnostic variants, counted by
valgrind's callgrind: a figure that does not move with the machine's load, where the req/s and
CPU-time figures of router_bench.py move by ±10-30 % between runs on a shared VM.

Not a pytest test; run it by hand (needs `apt-get install valgrind`):

    .venv/bin/python tests/bench/router_instructions.py [--requests N] [--warm N]

Each target is one nginx worker (master_process off) run under callgrind against the same fake
upstream as router_bench.py. The counters are zeroed after a warm-up (LuaJIT has compiled its
traces by then) and read after N sequential keep-alive requests of the 1 KB chat body. Only user
space is counted: the kernel's share (sockets, ~60 % of plain nginx's CPU time here) is the same
for every target, so the differences are the router's own work. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import router_bench as bench

HERE = Path(__file__).resolve().parent
OBJECTS = {  # shared object -> what it is, for the table
    "nginx": "nginx",
    "ngx_http_lua_module.so": "Lua module",
    "libluajit-5.1.so.2.1.0": "LuaJIT VM",
    "???": "JIT traces",
    "libc.so.6": "libc",
    "libcrypto.so.3": "OpenSSL",
}


def callgrind_copy(conf: str, port: int, root: Path, name: str) -> Path:
    moved = bench.moved(conf, port, root / f"{name}.pid")
    text, daemons = re.subn(r"daemon off;", "daemon off;\nmaster_process off;", moved)
    assert daemons == 1, f"{name}: unexpected nginx.conf"
    path = root / f"{name}.callgrind.conf"
    path.write_text(text)
    return path


def send(port: int, count: int, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        conn.request("POST", bench.CHAT, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
    conn.close()


def exclusive_by_object(dump: Path) -> tuple[int, Counter[str]]:
    """Total Ir and each shared object's own Ir, from a callgrind output file. Cost lines after a
    `calls=` line are a callee's inclusive cost, already counted where the callee ran."""
    names: dict[str, str] = {}
    by_object: Counter[str] = Counter()
    total = 0
    current = "?"
    after_call = False
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
        elif line.startswith(("ob=", "cob=")):
            # Both name objects from one table: "(3) /path" defines number 3, "(3)" refers to it.
            key, _, value = line.partition("=")
            found = re.match(r"\((\d+)\)(?: (.*))?$", value)
            name = value
            if found:
                if found.group(2):
                    names[found.group(1)] = found.group(2)
                name = names.get(found.group(1), "?")
            if key == "ob":
                current = name
        elif line.startswith("calls="):
            after_call = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            if after_call:
                after_call = False
                continue
            fields = line.split()
            if len(fields) >= 2:
                by_object[Path(current).name or current] += int(fields[1])
    return total, by_object


def measure(conf: str, root: Path, name: str, args: argparse.Namespace, body: bytes) -> tuple[float, dict[str, float]]:
    port = bench.free_port()
    path = callgrind_copy(conf, port, root, name)
    out = root / f"{name}.callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--smc-check=all-non-file"]
    with bench.started([*cmd, bench.NGINX, "-c", str(path)], root / f"{name}.valgrind.log") as proc:
        bench.wait_for_port(port, timeout=120)
        # The router answers 503 until its first health probe, slow under callgrind, has run.
        bench.wait_until(lambda: bench.http_post(f"http://127.0.0.1:{port}{bench.CHAT}", body, {})[0] == 200, 120, name)
        send(port, args.warm, body)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        send(port, args.requests, body)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    dumps = sorted(root.glob(f"{name}.callgrind.out.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"{name}: callgrind wrote no dump; see {root / f'{name}.valgrind.log'}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(dumps[0], args.keep / f"{name}.callgrind.out")
    total, by_object = exclusive_by_object(dumps[0])
    counted = sum(by_object.values())
    if abs(counted - total) > 0.02 * total:
        raise RuntimeError(f"{name}: objects add up to {counted}, callgrind's total is {total}")
    shares: Counter[str] = Counter()
    for obj, ir in by_object.items():
        shares[OBJECTS.get(obj, "other")] += ir / args.requests
    return total / args.requests, dict(shares)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="counted requests per target (default 2000)")
    parser.add_argument("--warm", type=int, default=3000, help="requests before counting (default 3000)")
    parser.add_argument("--diagnose", action="store_true", help="also router_bench.py's diagnostic variants")
    parser.add_argument("--keep", type=Path, help="copy each target's callgrind file here (for callgrind_annotate)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    body = bench.chat_body()
    with contextlib.ExitStack() as stack:
        work = bench.router_root("instructions")
        stack.callback(shutil.rmtree, work, True)
        upstream_port = bench.free_port()
        up_dir = work / "upstream"
        up_dir.mkdir()
        (up_dir / "bench_upstream.lua").write_text(bench.upstream_lua())
        bench.start_nginx(stack, up_dir, bench.upstream_conf(up_dir, upstream_port), upstream_port)

        models = [
            {"key": "tiny-qwen", "served_names": [bench.MODEL], "route_matches": ["qwen"], "port": upstream_port},
            {"key": "tiny-nemotron", "served_names": ["tiny-nemotron"], "route_matches": ["nemotron"]}
            | {"port": upstream_port},
        ]
        router_dir = bench.router_root("instructions-router")
        stack.callback(shutil.rmtree, router_dir, True)
        overrides = {"router_worker_processes": "1", "router_health_interval": 1}
        stack.enter_context(bench.running_router(router_dir, bench.tool_environment(), models, **overrides))
        router_conf = (router_dir / "etc" / "nginx.conf").read_text()

        plain_dir = work / "plain"
        plain_dir.mkdir()
        configs = {
            "plain nginx": bench.plain_proxy_conf(plain_dir, 1, upstream_port, 1),
            bench.FLOOR: bench.plain_proxy_conf(plain_dir, 1, upstream_port, 1, bench.EMPTY_LUA_PHASES),
            "router": router_conf,
        }
        if args.diagnose:
            for name in bench.VARIANTS:
                configs[name] = bench.variant(router_conf, name)

        results = {}
        for name, conf in configs.items():
            started = time.monotonic()
            print(f"{name}: {args.warm} + {args.requests} requests under callgrind ...", flush=True)
            results[name] = measure(conf, work, re.sub(r"\W+", "-", name).strip("-"), args, body)
            print(f"{name}: {results[name][0]:,.0f} instructions/request ({time.monotonic() - started:.0f} s)")

    plain = results["plain nginx"][0]
    columns = [*OBJECTS.values(), "other"]
    print()
    print(f"{args.requests} requests after {args.warm} warm-up ones, 1 KB chat body, one connection; user space only")
    print()
    print("| target | instructions/request | over plain nginx | ÷ plain nginx | " + " | ".join(columns) + " |")
    print("| --- | ---: | ---: | ---: |" + " ---: |" * len(columns))
    for name, (per_request, shares) in results.items():
        cells = " | ".join(f"{shares.get(column, 0):,.0f}" for column in columns)
        print(f"| {name} | {per_request:,.0f} | {per_request - plain:+,.0f} | {per_request / plain:.2f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
