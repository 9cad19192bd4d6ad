"""Repo ids: the HF cache first, then huggingface_hub against a fake Hub on 127.0.0.1 (no network is used).

The fake implements what `hf_hub_download` needs: HEAD and GET on /{repo}/resolve/{revision}/{filename} with
X-Repo-Commit, ETag and Content-Length, 404s with X-Error-Code, and Range requests for resumed downloads.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from conftest import FIXTURES

from groupvit_np.cli import main
from groupvit_np.hub import HubError, cached_snapshot, resolve_repo

MAIN = "a" * 40
V1 = "b" * 40
MAX_REQUESTS = 60  # each test needs a few dozen at most: more means a retry loop


class FakeHub(http.server.ThreadingHTTPServer):
    """repos: repo id -> branch -> (commit, {filename: bytes}). `cut[name] = n`: the next n GETs of `name` stop
    halfway through the body and drop the connection."""

    daemon_threads = True

    def __init__(self, repos: dict[str, dict[str, tuple[str, dict[str, bytes]]]]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos, self.cut, self.log = repos, {}, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def lookup(self, path: str):
        """(status, headers, body) for a resolve URL."""
        parts = [urllib.parse.unquote(p) for p in path.split("?")[0].strip("/").split("/")]
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {}, b""
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        branches = self.repos.get(repo)
        if branches is None:
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        hit = branches.get(revision) or next((b for b in branches.values() if b[0] == revision), None)
        if hit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b""
        commit, files = hit
        if filename not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b""
        body = files[filename]
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}, body


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 5  # a stuck client cannot hold a server thread

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _respond(self, send_body: bool) -> None:
        hub: FakeHub = self.server
        hub.log.append((self.command, self.path))
        assert len(hub.log) <= MAX_REQUESTS, "too many requests: a retry loop?"
        status, headers, body = hub.lookup(self.path)
        name = self.path.rsplit("/", 1)[-1]
        start = 0
        if status == 200 and self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if not send_body:
            return
        if hub.cut.get(name, 0) > 0 and send_body:
            hub.cut[name] -= 1
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-body
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def do_HEAD(self):
        self._respond(False)

    def do_GET(self):
        self._respond(True)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private HF cache and home, downloads on, proxies bypassed for loopback."""
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.fixture
def hub(env, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at its import: the environment may say 1
    tiny = {name: (FIXTURES / "model_hf_tiny" / name).read_bytes() for name in ("config.json", "model.safetensors")}
    server = FakeHub({
        "owner/tiny": {"main": (MAIN, {**tiny, "pytorch_model.bin": b"not downloaded", "vocab.json": b"{}"})},
        "owner/binonly": {"main": (MAIN, {"config.json": tiny["config.json"], "pytorch_model.bin": b"\0" * 64})},
        "owner/noweights": {"main": (MAIN, {"config.json": tiny["config.json"]})},
        "owner/twobranches": {"main": (MAIN, tiny), "v1": (V1, {**tiny, "config.json": b'{"v": 1}'})},
    })  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _gets(hub: FakeHub) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path in hub.log if method == "GET"]


def test_download_prefers_safetensors_and_fetches_extras(hub, env):
    snap = resolve_repo("owner/tiny")
    assert snap == env / "models--owner--tiny" / "snapshots" / MAIN
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    assert "pytorch_model.bin" not in _gets(hub)
    assert (snap / "model.safetensors").read_bytes() == (FIXTURES / "model_hf_tiny" / "model.safetensors").read_bytes()
    assert (env / "models--owner--tiny" / "refs" / "main").read_text() == MAIN


def test_cached_snapshot_is_used_without_any_request(hub):
    first = resolve_repo("owner/tiny")
    seen = len(hub.log)
    assert resolve_repo("owner/tiny") == first and len(hub.log) == seen


def test_falls_back_to_pytorch_model_bin(hub):
    snap = resolve_repo("owner/binonly")
    assert (snap / "pytorch_model.bin").read_bytes() == b"\0" * 64


def test_revision_is_honoured(hub, env):
    snap = resolve_repo("owner/twobranches", revision="v1")
    assert snap.name == V1 and (snap / "config.json").read_bytes() == b'{"v": 1}'
    assert (env / "models--owner--twobranches" / "refs" / "v1").read_text() == V1
    assert resolve_repo("owner/twobranches").name == MAIN
    assert resolve_repo("owner/twobranches", revision=V1) == snap  # a commit is looked up directly


@pytest.mark.parametrize(
    ("repo", "revision", "message"),
    [
        ("owner/missing", None, "does not exist"),
        ("owner/tiny", "nope", "no revision 'nope'"),
        ("owner/noweights", None, "neither model.safetensors nor pytorch_model.bin"),
        ("not a repo", None, "not a Hub repo id"),
        ("owner/tiny", "../../etc", "not a branch"),
    ],
)
def test_hub_errors_say_what_is_wrong(hub, repo, revision, message):
    with pytest.raises(HubError, match=message):
        resolve_repo(repo, revision)


def test_interrupted_download_leaves_no_corrupt_file_and_resumes(hub, env):
    hub.cut["model.safetensors"] = 1
    with pytest.raises(HubError, match="run the same command again to resume"):
        resolve_repo("owner/tiny")
    repo = env / "models--owner--tiny"
    assert cached_snapshot("owner/tiny") is None
    assert not (repo / "snapshots" / MAIN / "model.safetensors").exists()
    blobs = [p.name for p in (repo / "blobs").iterdir()]
    want = hashlib.sha256((FIXTURES / "model_hf_tiny" / "model.safetensors").read_bytes()).hexdigest()
    assert want not in blobs and f"{want}.incomplete" in blobs  # only huggingface_hub's resumable partial file
    snap = resolve_repo("owner/tiny")
    assert hashlib.sha256((snap / "model.safetensors").read_bytes()).hexdigest() == want
    assert any(method == "GET" for method, _ in hub.log[-6:])


def test_unreachable_endpoint(env, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    http = pytest.importorskip("huggingface_hub.utils._http")
    monkeypatch.setattr(http.time, "sleep", lambda seconds: None)  # its 5 retries would wait 1+2+4+8+8 s
    with pytest.raises(HubError, match="cannot reach"):
        resolve_repo("owner/tiny")


def _populate(cache: Path, repo: str, files: dict[str, bytes], commit: str = MAIN) -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, body in files.items():
        (snap / name).write_bytes(body)
    return snap


def test_offline_uses_a_prepopulated_cache(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would fail at once if anything tried to connect
    tiny = FIXTURES / "model_hf_tiny"
    snap = _populate(
        env, "nvidia/groupvit-gcc-yfcc", {n: (tiny / n).read_bytes() for n in ("config.json", "model.safetensors")}
    )
    assert resolve_repo("nvidia/groupvit-gcc-yfcc") == snap
    from groupvit_np import GroupViTModel

    assert GroupViTModel.from_pretrained("nvidia/groupvit-gcc-yfcc").config.vision_config.image_size == 30
    with pytest.raises(HubError, match="HF_HUB_OFFLINE.*groupvit-np download nvidia/groupvit-gcc-redcaps"):
        resolve_repo("nvidia/groupvit-gcc-redcaps")


def test_incomplete_cache_is_not_used(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _populate(env, "owner/partial", {"config.json": b"{}"})  # weights missing
    assert cached_snapshot("owner/partial") is None
    with pytest.raises(HubError, match="not in the cache"):
        resolve_repo("owner/partial")


def test_without_huggingface_hub_the_message_says_what_to_install(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(HubError, match=r"pip install 'groupvit-np\[hub\]'.*put config.json and model.safetensors"):
        resolve_repo("owner/tiny")


def test_cli_download_and_model_from_repo_id(hub, env, capsys):
    assert main(["download", "owner/tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(env / "models--owner--tiny" / "snapshots" / MAIN)
    assert main(["download", "owner/missing"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("groupvit-np download: error:") and err.count("\n") == 1
    from groupvit_np import GroupViTModel

    assert GroupViTModel.from_pretrained("owner/tiny").config.text_config.vocab_size == 99
