"""Hub repo ids -> local snapshot folders: the Hugging Face cache first, then `huggingface_hub` (optional extra).

The cache layout is huggingface_hub's: `<cache>/models--owner--name/refs/<revision>` holds a commit sha, and
`snapshots/<sha>/` the files (symlinks into `blobs/`). A snapshot counts when it has config.json and
model.safetensors or pytorch_model.bin, so users who already have the files download nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .weights import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
OPTIONAL_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "preprocessor_config.json")  # fmt: skip
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_INSTALL = "pip install 'groupvit-np[hub]' (or: pip install huggingface_hub)"


class HubError(CheckpointError):
    """A repo id that cannot be resolved to local files: not cached and not downloadable."""


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


def _check(repo_id: str, revision: str | None) -> str:
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise HubError(f"{repo_id!r} is not a Hub repo id of the form 'owner/name'")
    revision = revision or "main"
    if revision.startswith("/") or ".." in revision.split("/"):
        raise HubError(f"revision {revision!r} is not a branch, tag or commit")
    return revision


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / w).is_file() for w in WEIGHT_FILES)


def cached_snapshot(
    repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` (default "main"), or None when it is not complete."""
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
    return folder if _complete(folder) else None


def resolve_repo(
    repo_id: str,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> Path:
    """A local folder holding `repo_id`'s config.json and weights: from the cache, else downloaded.

    Downloads honour HF_ENDPOINT, HF_HUB_OFFLINE (or `offline`) and `revision`; they take model.safetensors when the
    repo has it, else pytorch_model.bin, plus the tokenizer and preprocessor files it has.
    """
    revision = _check(repo_id, revision)
    root = cache_root(cache_dir)
    found = cached_snapshot(repo_id, revision, root)
    if found is not None:
        return found
    if offline is None:
        offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
    where = (
        f"put config.json and model.safetensors (or pytorch_model.bin) in a folder and pass the folder instead, "
        f"or fill the Hugging Face cache at {root}"
    )
    if offline:
        raise HubError(f"{repo_id}@{revision} is not in the cache at {root} and downloads are off (HF_HUB_OFFLINE); "
                       f"run `groupvit-np download {repo_id}` where there is network, or {where}")  # fmt: skip
    try:
        import huggingface_hub  # noqa: F401  (optional: only needed to download)
    except ImportError:
        raise HubError(f"{repo_id} is not in the cache at {root}; to download it, {_INSTALL}; or {where}") from None
    return _download(repo_id, revision, root, where)


def _download(repo_id: str, revision: str, root: Path, where: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")

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

    try:
        snapshot = get("config.json", revision).parent
        commit = snapshot.name  # pin the commit: a branch that moves mid-download must not mix two snapshots
        if not any(optional(name, commit) for name in WEIGHT_FILES):
            raise HubError(f"{repo_id}@{revision} has neither {' nor '.join(WEIGHT_FILES)}")
        for name in OPTIONAL_FILES:
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
        raise HubError(f"{repo_id}@{revision} has no config.json: not a transformers checkpoint") from None
    except OSError as err:  # requests' errors are OSErrors: refused connections, broken or short downloads
        raise HubError(
            f"downloading {repo_id} from {endpoint} failed ({_first_line(err)}); run the same command again to "
            f"resume, or {where}"
        ) from None
    if not _complete(snapshot):
        raise HubError(f"{snapshot} is incomplete after the download")
    return snapshot


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
