"""Sources -> local folders: a path as given, or a Hub repo id through the Hugging Face cache, then `huggingface_hub`.

Every `from_pretrained` goes through `resolve(source, revision, kind)`. Something that looks like a path (starts with
".", "/" or "~", has a file extension, or has more than one "/") is never a repo id. The cache layout is
huggingface_hub's: `<cache>/models--owner--name/refs/<revision>` holds a commit sha, and `snapshots/<sha>/` the
files (symlinks into `blobs/`). A snapshot counts when it has the files the caller needs (a model: config.json and
model.safetensors or pytorch_model.bin; a tokenizer: vocab.json and merges.txt), so users who already have the
files download nothing.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import HubError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
TOKENIZER_EXTRAS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
OPTIONAL_FILES = ("vocab.json", "merges.txt", *TOKENIZER_EXTRAS, "preprocessor_config.json")
# kind -> (required groups, each satisfied by any one of its files; optional files fetched alongside)
KINDS = {
    "model": ((("config.json",), WEIGHT_FILES), OPTIONAL_FILES),
    "config": ((("config.json",),), ()),
    "tokenizer": ((("vocab.json",), ("merges.txt",)), TOKENIZER_EXTRAS),
    "image_processor": ((("preprocessor_config.json",),), ()),
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,11}$")  # ".pth", ".safetensors"; not "-3.1" in "Llama-3.1"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_INSTALL = "pip install 'groupvit-np[hub]' (or: pip install huggingface_hub)"
CONNECT_TIMEOUT = 4.0  # seconds to open a connection to the Hub (or its proxy) before giving up


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The HF hub cache: `cache_dir`, else $HF_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/..."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def looks_like_repo_id(source: str | os.PathLike) -> bool:
    """True for "owner/name"; False for anything that looks like a path: a Path object, or text that starts with
    ".", "/" or "~", has a file extension, a backslash, or other than one "/". `nvidia/groupvit-gcc-yfcc` is an id;
    `./weights/demo`, `weights/demo/`, `ckpt/model.pth` and `a/b/c` are paths."""
    if not isinstance(source, str):
        return False
    if source.startswith((".", "/", "~")) or "\\" in source or _EXTENSION.search(source):
        return False
    return _REPO_ID.match(source) is not None and ".." not in source


def resolve(source: str | os.PathLike, revision: str | None = None, *, kind: str = "model") -> Path:
    """The local file or folder behind `source`: itself when it exists, a Hub repo id's snapshot (cache first,
    downloading with the `hub` extra), else FileNotFoundError "no such file or folder". `kind` (a key of KINDS)
    says which files a snapshot must hold."""
    path = Path(os.path.expanduser(os.fspath(source)))
    if path.exists():
        return path
    if looks_like_repo_id(source):
        return resolve_repo(str(source), revision, kind=kind)
    raise FileNotFoundError(f"{source}: no such file or folder")


def _check(repo_id: str, revision: str | None) -> str:
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise HubError(f"{repo_id!r} is not a Hub repo id of the form 'owner/name'")
    revision = revision or "main"
    if revision.startswith("/") or ".." in revision.split("/"):
        raise HubError(f"revision {revision!r} is not a branch, tag or commit")
    return revision


def _complete(folder: Path, kind: str = "model") -> bool:
    return all(any((folder / name).is_file() for name in group) for group in KINDS[kind][0])


def _needs(kind: str) -> str:
    """What a folder of `kind` holds, in words: "config.json and model.safetensors (or pytorch_model.bin)"."""
    return " and ".join(g[0] + (f" (or {' or '.join(g[1:])})" if len(g) > 1 else "") for g in KINDS[kind][0])


def cached_snapshot(
    repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None, kind: str = "model"
) -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` (default "main"), or None when it lacks what `kind`
    needs."""
    revision = _check(repo_id, revision)
    repo = cache_root(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    commit = revision
    if not _COMMIT.match(revision):
        ref = repo / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
        if not _COMMIT.match(commit):
            return None
    folder = repo / "snapshots" / commit
    return folder if _complete(folder, kind) else None


def resolve_repo(
    repo_id: str,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    kind: str = "model",
) -> Path:
    """A local folder holding `repo_id`'s files for `kind` (a model: config.json and weights): from the cache, else
    downloaded.

    Downloads honour HF_ENDPOINT, HF_HUB_OFFLINE (or `offline`) and `revision`. A model takes model.safetensors
    when the repo has it, else pytorch_model.bin, plus the tokenizer and preprocessor files it has.
    """
    revision = _check(repo_id, revision)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    root = cache_root(cache_dir)
    found = cached_snapshot(repo_id, revision, root, kind)
    if found is not None:
        return found
    if offline is None:
        offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
    where = f"put {_needs(kind)} in a folder and pass the folder instead, or fill the Hugging Face cache at {root}"
    if offline:
        raise HubError(f"{repo_id} is no local folder, and {repo_id}@{revision} is not in the cache at {root} with "
                       f"downloads off (HF_HUB_OFFLINE); run `groupvit-np download {repo_id}` where there is network, "
                       f"or {where}")  # fmt: skip
    try:
        import huggingface_hub  # noqa: F401  (optional: only needed to download)
    except ImportError:
        raise HubError(f"{repo_id} is no local folder, and not in the Hugging Face cache at {root}; to download it, "
                       f"{_INSTALL}; or {where}") from None  # fmt: skip
    return _download(repo_id, revision, root, where, kind)


def _download(repo_id: str, revision: str, root: Path, where: str, kind: str = "model") -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    failure = unreachable(endpoint)
    if failure:  # huggingface_hub would retry a refused connection for 24 s, logging every attempt
        raise HubError(f"cannot reach {endpoint} to download {repo_id} ({failure}); {where}")

    def get(filename: str, rev: str) -> Path:
        # endpoint and cache passed explicitly: huggingface_hub reads its environment only once, at import
        return Path(hf_hub_download(repo_id, filename, revision=rev, cache_dir=str(root), endpoint=endpoint))

    def optional(filename: str, rev: str) -> Path | None:
        try:
            return get(filename, rev)
        except LocalEntryNotFoundError:
            raise
        except EntryNotFoundError:
            return None

    required, extras = KINDS[kind]
    first = required[0][0]
    try:
        snapshot = get(first, revision).parent
        commit = snapshot.name  # pin the commit: a branch that moves mid-download must not mix two snapshots
        for group in required[1:]:
            if not any(optional(name, commit) for name in group):
                raise HubError(f"{repo_id}@{revision} has neither {' nor '.join(group)}")
        for name in extras:
            optional(name, commit)
    except LocalEntryNotFoundError as err:
        raise HubError(f"cannot reach {endpoint} to download {repo_id} ({_first_line(err)}); {where}") from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{endpoint}/{repo_id} does not exist, or is private or gated (log in with `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError:
        what = "not a transformers checkpoint" if first == "config.json" else f"no {kind.replace('_', ' ')} files"
        raise HubError(f"{repo_id}@{revision} has no {first}: {what}") from None
    except OSError as err:  # requests' errors are OSErrors: refused connections, broken or short downloads
        raise HubError(
            f"downloading {repo_id} from {endpoint} failed ({_first_line(err)}); run the same command again to "
            f"resume, or {where}"
        ) from None
    if not _complete(snapshot, kind):
        raise HubError(f"{snapshot} is incomplete after the download")
    return snapshot


def unreachable(endpoint: str, timeout: float | None = None) -> str | None:
    """Why no TCP connection to `endpoint` (or the proxy the environment names for it) opens within `timeout`
    seconds, or None when one does. Name lookup runs in a thread, so a dead resolver cannot stall past `timeout`."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = None if urllib.request.proxy_bypass(host) else urllib.request.getproxies().get(url.scheme)
    if proxy:
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = target.hostname or "", target.port or 80
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(str(err) or type(err).__name__)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:g} s"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
