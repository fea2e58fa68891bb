"""Probe and fetch model repositories from the Hugging Face Hub (or a mirror at HF_ENDPOINT).

Shipped by the model_weights role and run with the python of its huggingface_hub venv on the
target. Every subcommand prints one JSON object on stdout.

  probe     read-only: for each model, the files the patterns select at the pinned revision, their
            sizes from the Hub's metadata, the bytes still missing locally, and whether this token
            may download them (gated or private repositories). Problems are reported, not raised.
  fetch     downloads what is missing of one model into its directory (huggingface_hub's local-dir
            mode), then checks every selected file against the Hub's size. Holds a lock on the
            model directory for its whole run.
  progress  read-only: waits up to --wait seconds or until the fetch holding the lock ends, then
            reports the bytes on disk under the model directory against the expected total.

The token is read from --token-file (a 0600 file the role writes and removes); it is never taken
from argv or printed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Written by huggingface_hub's local-dir mode next to the files (per-file metadata, tree listing,
# partial downloads); never part of the model.
HF_STATE = Path(".cache") / "huggingface"
MANIFEST = ".llm-serving-manifest.json"
LOCK = HF_STATE / "llm-serving-fetch.lock"
HUB_PAGE = "https://huggingface.co"


class Failed(Exception):
    """A failure the operator can act on; printed as {"failed": true, "msg": ...}, exit status 1."""


def read_token(path: str | None) -> str | bool:
    """The token, or False so that no token stored on the host is picked up implicitly."""
    if not path:
        return False
    token = Path(path).read_text().strip()
    return token or False


def selected_files(info: Any, allow: list[str] | None, ignore: list[str] | None) -> dict[str, int]:
    from huggingface_hub.utils import filter_repo_objects

    sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    return {
        name: sizes[name] for name in filter_repo_objects(sorted(sizes), allow_patterns=allow, ignore_patterns=ignore)
    }


def local_size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def explain(error: Exception, model: dict[str, Any], endpoint: str, token: str | bool) -> str:
    """One sentence per failure, saying what to change."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    key, repo, revision = model["key"], model["repo"], model["revision"]
    page = f"{HUB_PAGE}/{repo}"
    if isinstance(error, GatedRepoError):
        who = (
            "model_weights_hf_token is empty"
            if not token
            else "the account of model_weights_hf_token has not been granted access"
        )
        return (
            f"Model {key}: {repo} is a gated repository and {who}. Accept its licence at {page} while logged in "
            f"to the Hub, then set model_weights_hf_token (from a vault) to a read token of that account."
        )
    if isinstance(error, RevisionNotFoundError):
        return (
            f"Model {key}: {repo} has no revision '{revision}' on {endpoint}. Set its revision to a commit, branch "
            f"or tag listed at {page}/commits/main (catalog_model_overrides: {{{key}: {{revision: ...}}}})."
        )
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"Model {key}: the repository {repo} does not exist on {endpoint}, or it is private and "
            f"model_weights_hf_token {'is empty' if not token else 'has no access to it'}. Check the repo at {page}."
        )
    response = getattr(error, "response", None)
    if isinstance(error, HfHubHTTPError) and response is not None and response.status_code == 401:
        return (
            f"Model {key}: {endpoint} refused model_weights_hf_token (invalid or expired). Create a read token at "
            f"{HUB_PAGE}/settings/tokens and put it in model_weights_hf_token; if {repo} is gated, also accept its "
            f"licence at {page}."
        )
    return (
        f"Model {key}: cannot read {repo}@{revision} from {endpoint} ({type(error).__name__}: {error}). Check the "
        f"network or set model_weights_hf_endpoint to a reachable mirror."
    )


def probe_model(api: Any, model: dict[str, Any], root: Path, allow: list[str], ignore: list[str]) -> dict[str, Any]:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    allow, ignore = model.get("allow_patterns") or allow, model.get("ignore_patterns") or ignore
    info = api.model_info(model["repo"], revision=model["revision"], files_metadata=True)
    files = selected_files(info, allow, ignore)
    if not files:
        raise LookupError(
            f"Model {model['key']}: no file of {model['repo']}@{model['revision']} matches allow_patterns {allow} "
            f"minus ignore_patterns {ignore}; set them with catalog_model_overrides."
        )
    # Metadata of gated repositories is public; a download is not. One HEAD on the smallest file shows
    # whether this token may download, the same call every file download starts with.
    smallest = min(files, key=lambda name: files[name])
    get_hf_file_metadata(
        hf_hub_url(model["repo"], smallest, revision=info.sha, endpoint=api.endpoint),
        token=api.token,
        endpoint=api.endpoint,
    )
    model_dir = root / model["repo"]
    missing = sum(size for name, size in files.items() if local_size(model_dir / name) != size)
    return {
        "commit": info.sha,
        "gated": bool(info.gated),
        "files": files,
        "total_bytes": sum(files.values()),
        "missing_bytes": missing,
    }


def probe(args: argparse.Namespace) -> dict[str, Any]:
    from huggingface_hub import HfApi

    token = read_token(args.token_file)
    api = HfApi(endpoint=args.endpoint, token=token)
    models, problems = {}, []
    allow, ignore = json.loads(args.allow_patterns), json.loads(args.ignore_patterns)
    for model in json.loads(args.models):
        try:
            models[model["key"]] = probe_model(api, model, Path(args.dir), allow, ignore)
        except LookupError as error:
            problems.append(str(error))
        except Exception as error:  # every Hub failure becomes a message for the operator
            problems.append(explain(error, model, args.endpoint, token))
    return {"models": models, "problems": problems}


@contextmanager
def locked(model_dir: Path) -> Iterator[None]:
    """One fetch per model directory; a second one waits (a fetch left running by an interrupted play)."""
    lock_path = model_dir / LOCK
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def model_files(model_dir: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(model_dir)): path
        for path in model_dir.rglob("*")
        if path.is_file() and not path.relative_to(model_dir).is_relative_to(HF_STATE) and path.name != MANIFEST
    }


def fetch(args: argparse.Namespace) -> dict[str, Any]:
    from huggingface_hub import HfApi, snapshot_download

    token = read_token(args.token_file)
    model_dir = Path(args.dir) / args.repo
    allow, ignore = json.loads(args.allow_patterns), json.loads(args.ignore_patterns)
    api = HfApi(endpoint=args.endpoint, token=token)
    model = {"key": args.key, "repo": args.repo, "revision": args.revision}
    try:
        info = api.model_info(args.repo, revision=args.revision, files_metadata=True)
    except Exception as error:
        raise Failed(explain(error, model, args.endpoint, token)) from None
    files = selected_files(info, allow, ignore)
    with locked(model_dir):
        # Partial files of a fetch that was killed: their names are unique per process, so they can
        # never be resumed, only waste space. No fetch of ours is running now: we hold the lock.
        for partial in (model_dir / HF_STATE / "download").rglob("*.incomplete"):
            partial.unlink()
        before = {name: stat_key(path) for name, path in model_files(model_dir).items()}
        # A file of the wrong size whose download metadata matches would be trusted by
        # huggingface_hub as it is: remove it so that it is fetched again.
        for name, size in files.items():
            if local_size(model_dir / name) not in (None, size):
                (model_dir / name).unlink()
        try:
            snapshot_download(
                args.repo,
                revision=info.sha,
                local_dir=model_dir,
                allow_patterns=allow,
                ignore_patterns=ignore,
                token=token,
                endpoint=args.endpoint,
                max_workers=args.max_workers,
            )
        except Exception as error:
            raise Failed(explain(error, model, args.endpoint, token)) from None
        wrong = {
            name: local_size(model_dir / name) for name, size in files.items() if local_size(model_dir / name) != size
        }
        if wrong:
            raise Failed(f"Model {args.key}: files of the wrong size after the download: {wrong}")
        # Files the revision no longer has (a shard of an older revision) would be loaded with the new ones.
        stale = sorted(set(model_files(model_dir)) - set(files))
        for name in stale:
            (model_dir / name).unlink()
        after = model_files(model_dir)
    downloaded = sorted(name for name, path in after.items() if before.get(name) != stat_key(path))
    return {"commit": info.sha, "files": files, "downloaded": downloaded, "removed": stale}


def bytes_on_disk(model_dir: Path) -> int:
    """The model's files plus the partial downloads under huggingface_hub's state directory."""
    total = 0
    for path in model_dir.rglob("*"):
        relative = path.relative_to(model_dir)
        partial = relative.is_relative_to(HF_STATE) and path.name.endswith(".incomplete")
        if path.is_file() and path.name != MANIFEST and (partial or not relative.is_relative_to(HF_STATE)):
            total += path.stat().st_size
    return total


def fetch_running(model_dir: Path) -> bool:
    try:
        with (model_dir / LOCK).open("r") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False


def human(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.2f} {unit}" if unit != "B" else f"{count:.0f} B"
        count /= 1000
    raise AssertionError("unreachable")


def progress(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(args.dir) / args.repo
    started, first = time.monotonic(), bytes_on_disk(model_dir)
    time.sleep(min(1.0, args.wait))
    while time.monotonic() - started < args.wait and fetch_running(model_dir):
        time.sleep(1.0)
    elapsed, done = time.monotonic() - started, bytes_on_disk(model_dir)
    rate = max(done - first, 0) / elapsed
    shown = min(done, args.total)
    percent = 100 * shown / args.total if args.total else 100
    return {
        "bytes": done,
        "total": args.total,
        "rate": rate,
        "summary": f"{human(shown)} of {human(args.total)} on disk ({percent:.0f}%), {human(rate)}/s",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("probe", "fetch"):
        command = commands.add_parser(name)
        command.add_argument("--dir", required=True, help="directory the models live under, as <dir>/<repo>")
        command.add_argument("--endpoint", default=os.environ.get("HF_ENDPOINT", HUB_PAGE))
        command.add_argument("--token-file", help="file holding the Hub token (read, never printed)")
        command.add_argument("--allow-patterns", required=True, help="JSON list of globs of the files to fetch")
        command.add_argument("--ignore-patterns", required=True, help="JSON list of globs of the files to skip")
    commands.choices["probe"].add_argument(
        "--models", required=True, help="JSON list of {key, repo, revision[, allow_patterns, ignore_patterns]}"
    )
    fetch_command = commands.choices["fetch"]
    for name in ("key", "repo", "revision"):
        fetch_command.add_argument(f"--{name}", required=True)
    fetch_command.add_argument("--max-workers", type=int, default=8)
    progress_command = commands.add_parser("progress")
    progress_command.add_argument("--dir", required=True)
    progress_command.add_argument("--repo", required=True)
    progress_command.add_argument("--total", type=int, required=True, help="expected bytes of the model")
    progress_command.add_argument("--wait", type=float, required=True, help="seconds to wait at most")
    args = parser.parse_args()
    try:
        result = {"probe": probe, "fetch": fetch, "progress": progress}[args.command](args)
    except Failed as failure:
        print(json.dumps({"failed": True, "msg": str(failure)}))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
