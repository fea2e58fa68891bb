"""A local stand-in for the Hugging Face Hub: the Hub itself is unreachable from the test machines.

It answers the calls the real huggingface_hub client (the version the model_weights role pins)
makes to download a model, with the headers that client reads (file_download.py,
utils/_http.py:hf_raise_for_status, hf_api.py:model_info/list_repo_tree):

  GET  /api/models/{repo}[/revision/{rev}][?blobs=true]   model_info: sha, gated, siblings (+ sizes, blobId, lfs)
  GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=   list_repo_tree: files and folders
  HEAD /{repo}/resolve/{rev}/{path}                        X-Repo-Commit, ETag (X-Linked-Etag/-Size for LFS), size
  GET  /{repo}/resolve/{rev}/{path}                        the bytes; Range requests answered with 206

Errors as the Hub sends them: 404 with X-Error-Code RepoNotFound, RevisionNotFound or
EntryNotFound; 401 with X-Error-Code GatedRepo for a download from a gated repository without a
token; 401 with X-Error-Message "Invalid credentials in Authorization header" for a token other
than the accepted one. Downloads can be throttled (--rate) to show progress, and held mid-file
(--stall-file) so that a test can kill one there whatever the machine's load.
Each request is logged as a JSON line (--log), with whether it carried the accepted token (never
the token itself).

The fixture layout, written by the `fixture` subcommand, mirrors the Hub cache's:
  <root>/<org>/<name>/revisions/<commit>/<files>   one directory per commit
  <root>/<org>/<name>/refs/<ref>                   a branch or tag -> commit
  <root>/<org>/<name>/gated                        present: downloads need the token

  server.py fixture SRC ROOT ORG/NAME [--ref main] [--gated] [--sparse NAME=BYTES]   prints the commit
  server.py serve ROOT [--port 8998] [--token-file F] [--rate BYTES_PER_S] [--stall-file F] [--log F]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Files the Hub stores with Git LFS (its ETag is then the sha256 of the content).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Sparse stand-ins for huge files are never read whole: they get an id derived from name and size.
HASH_LIMIT = 256 * 1024 * 1024
CHUNK = 16 * 1024


@cache
def blob_ids(path: Path, size: int, mtime_ns: int) -> tuple[str, str]:
    """(git blob sha1, sha256) of a file."""
    if size > HASH_LIMIT:
        marker = f"{path.name}:{size}".encode()
        return hashlib.sha1(marker).hexdigest(), hashlib.sha256(marker).hexdigest()
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), hashlib.sha256(data).hexdigest()


def file_entry(base: Path, path: Path) -> dict[str, Any]:
    stat = path.stat()
    sha1, sha256 = blob_ids(path, stat.st_size, stat.st_mtime_ns)
    entry: dict[str, Any] = {"path": str(path.relative_to(base)), "size": stat.st_size, "oid": sha1}
    if path.name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": sha256, "size": stat.st_size, "pointerSize": 134}
    return entry


def commit_of(tree: Path) -> str:
    """A stable commit id for a directory: the same files give the same commit."""
    digest = hashlib.sha1()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        entry = file_entry(tree, path)
        digest.update(json.dumps(entry, sort_keys=True).encode())
    return digest.hexdigest()


def build_fixture(args: argparse.Namespace) -> None:
    repo_dir = Path(args.root) / args.repo
    Path(args.root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=Path(args.root)))
    staging.chmod(0o755)
    if args.src:
        shutil.copytree(args.src, staging, dirs_exist_ok=True)
    for spec in args.sparse:
        name, size = spec.split("=", 1)
        with (staging / name).open("wb") as sparse:
            sparse.truncate(int(size))
    commit = commit_of(staging)
    target = repo_dir / "revisions" / commit
    if target.exists():
        shutil.rmtree(staging)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / args.ref).write_text(commit)
    if args.gated:
        (repo_dir / "gated").touch()
    print(commit)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Hub:
    def __init__(
        self, root: Path, token: str | None, rate: int, log: Path | None, stall_file: Path | None = None
    ) -> None:
        self.root, self.token, self.rate, self.log = root, token, rate, log
        # While this file exists, a download of the file it names stops after its first chunk.
        self.stall_file = stall_file
        self.log_lock = threading.Lock()

    def stalled(self, path: Path) -> bool:
        if self.stall_file is None:
            return False
        try:
            return self.stall_file.read_text().strip() == path.name
        except FileNotFoundError:
            return False

    def repo_dir(self, repo: str) -> Path:
        repo_dir = self.root / repo
        if repo.count("/") != 1 or not (repo_dir / "revisions").is_dir():
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo_dir

    def resolve(self, repo: str, revision: str) -> tuple[str, Path]:
        repo_dir = self.repo_dir(repo)
        ref = repo_dir / "refs" / revision
        commit = ref.read_text().strip() if "/" not in revision and ref.is_file() else revision
        tree = repo_dir / "revisions" / commit
        if "/" in commit or not tree.is_dir():
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit, tree

    def gated(self, repo: str) -> bool:
        return (self.repo_dir(repo) / "gated").exists()

    def write_log(self, entry: dict[str, Any]) -> None:
        if self.log is None:
            return
        with self.log_lock, self.log.open("a") as log:
            log.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    hub: Hub
    server_version = "fake-hub/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the JSON log instead."""

    def do_HEAD(self) -> None:
        self.handle_request(send_body=False)

    def do_GET(self) -> None:
        self.handle_request(send_body=True)

    def handle_request(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        authorized = self.authorization()
        status = 200
        try:
            if authorized is False:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                status = self.api(parts[2:], parse_qs(url.query), authorized)
            elif len(parts) >= 5 and parts[2] == "resolve":
                status = self.resolve_file(
                    f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), authorized, send_body
                )
            else:
                raise HubError(404, None, "Not found")
        except HubError as error:
            status = error.status
            body = json.dumps({"error": error.message}).encode()
            self.send_response(error.status)
            if error.code:
                self.send_header("X-Error-Code", error.code)
            self.send_header("X-Error-Message", error.message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            status = 499
        finally:
            self.hub.write_log(
                {
                    "time": time.time(),
                    "method": self.command,
                    "path": url.path,
                    "status": status,
                    "range": self.headers.get("Range"),
                    "authorized": bool(authorized),
                }
            )

    def authorization(self) -> bool | None:
        """None: no token; True: the accepted token; False: any other token."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        return self.hub.token is not None and header.removeprefix("Bearer ") == self.hub.token

    def send_json(self, data: Any) -> int:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return 200

    def api(self, parts: list[str], query: dict[str, list[str]], authorized: bool | None) -> int:
        repo = f"{parts[0]}/{parts[1]}"
        rest = parts[2:]
        if not rest or rest[0] == "revision":
            commit, tree = self.hub.resolve(repo, rest[1] if len(rest) > 1 else "main")
            with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for path in sorted(p for p in tree.rglob("*") if p.is_file()):
                entry = file_entry(tree, path)
                sibling: dict[str, Any] = {"rfilename": entry["path"]}
                if with_blobs:
                    sibling.update(size=entry["size"], blobId=entry["oid"])
                    if "lfs" in entry:
                        sibling["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"], "pointerSize": 134}
                siblings.append(sibling)
            return self.send_json(
                {
                    "_id": commit[:24],
                    "id": repo,
                    "modelId": repo,
                    "sha": commit,
                    "private": False,
                    "gated": "manual" if self.hub.gated(repo) else False,
                    "disabled": False,
                    "tags": [],
                    "siblings": siblings,
                }
            )
        if rest[0] == "tree" and len(rest) >= 2:
            _, tree = self.hub.resolve(repo, rest[1])
            base = tree.joinpath(*rest[2:]) if len(rest) > 2 else tree
            if not base.is_dir():
                raise HubError(404, "EntryNotFound", f"{'/'.join(rest[2:])} does not exist")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries = []
            for path in sorted(base.rglob("*") if recursive else base.iterdir()):
                if path.is_dir():
                    entries.append({"type": "directory", "oid": "0" * 40, "path": str(path.relative_to(tree))})
                else:
                    entries.append({"type": "file", **file_entry(tree, path)})
            return self.send_json(entries)
        raise HubError(404, None, "Not found")

    def resolve_file(self, repo: str, revision: str, name: str, authorized: bool | None, send_body: bool) -> int:
        commit, tree = self.hub.resolve(repo, revision)
        if self.hub.gated(repo) and not authorized:
            raise HubError(
                401,
                "GatedRepo",
                f"Access to model {repo} is restricted. You must have access to it and be authenticated to access it.",
            )
        path = tree / name
        if ".." in Path(name).parts or not path.is_file():
            raise HubError(404, "EntryNotFound", f"{name} does not exist at {revision}")
        entry = file_entry(tree, path)
        size = entry["size"]
        start, end = 0, size - 1
        requested = self.headers.get("Range", "")
        status = 200
        if requested.startswith("bytes=") and send_body:
            first, _, last = requested.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), min(int(last) if last else size - 1, size - 1)
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", commit)
        if "lfs" in entry:
            self.send_header("ETag", f'"{entry["lfs"]["oid"]}"')
            self.send_header("X-Linked-Etag", f'"{entry["lfs"]["oid"]}"')
            self.send_header("X-Linked-Size", str(size))
        else:
            self.send_header("ETag", f'"{entry["oid"]}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1 if send_body else size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if send_body:
            self.send_bytes(path, start, end - start + 1)
        return status

    def send_bytes(self, path: Path, start: int, length: int) -> None:
        with path.open("rb") as data:
            data.seek(start)
            while length > 0:
                chunk = data.read(min(CHUNK, length))
                if not chunk:
                    break
                self.wfile.write(chunk)
                length -= len(chunk)
                if self.hub.rate:
                    time.sleep(len(chunk) / self.hub.rate)
                while length > 0 and self.hub.stalled(path):
                    self.raise_if_client_left()

    def raise_if_client_left(self) -> None:
        """Waits up to 50 ms for the client to close: a killed client is logged (499) when it dies."""
        readable, _, _ = select.select([self.connection], [], [], 0.05)
        if readable and not self.connection.recv(1, socket.MSG_PEEK):
            raise ConnectionResetError("the client closed the connection")


def serve(args: argparse.Namespace) -> None:
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    Handler.hub = Hub(
        Path(args.root),
        token,
        args.rate,
        Path(args.log) if args.log else None,
        Path(args.stall_file) if args.stall_file else None,
    )
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    print(f"fake Hub serving {args.root} on http://{args.bind}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A local stand-in for the Hugging Face Hub's file API.")
    commands = parser.add_subparsers(dest="command", required=True)
    fixture = commands.add_parser("fixture", help="add a directory as a commit of a repository; prints the commit")
    fixture.add_argument("src", nargs="?", help="directory whose files make the commit")
    fixture.add_argument("root")
    fixture.add_argument("repo", help="org/name")
    fixture.add_argument("--ref", default="main", help="branch or tag to point at the commit")
    fixture.add_argument("--gated", action="store_true", help="downloads need the accepted token")
    fixture.add_argument("--sparse", action="append", default=[], metavar="NAME=BYTES", help="add a sparse file")
    server = commands.add_parser("serve")
    server.add_argument("root")
    server.add_argument("--bind", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8998)
    server.add_argument("--token-file", help="file holding the one token accepted (for gated repositories)")
    server.add_argument("--rate", type=int, default=0, help="bytes per second per download (0: no limit)")
    server.add_argument(
        "--stall-file", help="while this file exists, downloads of the file it names stop after their first chunk"
    )
    server.add_argument("--log", help="file to append one JSON line per request to")
    args = parser.parse_args()
    os.umask(0o022)
    {"fixture": build_fixture, "serve": serve}[args.command](args)


if __name__ == "__main__":
    main()
