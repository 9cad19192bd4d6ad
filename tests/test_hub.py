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
        self.ranges: list[tuple[str, int]] = []  # (filename, first byte) of each GET with a Range header
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
            if send_body:
                hub.ranges.append((name, start))
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


def test_interrupted_download_leaves_no_corrupt_file_and_resumes(hub, env, monkeypatch):
    """What a user relies on when the connection drops mid-file, whichever huggingface_hub is installed: no
    truncated file is ever taken for the weights, and the download resumes from the bytes it has.

    huggingface_hub 0.x gives up on the dropped connection (we say: run the same command again) and the next call
    resumes from its `.incomplete` file; 2.x retries by itself within the call. Either way the transfer continues
    with a Range request from the bytes it kept. huggingface_hub writes what it receives in DOWNLOAD_CHUNK_SIZE
    pieces (10 MB), more than this whole 2 MB file, so a smaller piece makes this file behave as real weights do.
    """
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    body = (FIXTURES / "model_hf_tiny" / "model.safetensors").read_bytes()
    want = hashlib.sha256(body).hexdigest()
    repo = env / "models--owner--tiny"
    hub.cut["model.safetensors"] = 1
    try:
        snap = resolve_repo("owner/tiny")
    except HubError as err:  # the call gave up: nothing usable is left behind, and the message says what to do
        assert "run the same command again to resume" in str(err)
        assert cached_snapshot("owner/tiny") is None
        assert not (repo / "snapshots" / MAIN / "model.safetensors").exists()
        blobs = [p.name for p in (repo / "blobs").iterdir()]
        assert want not in blobs and f"{want}.incomplete" in blobs  # only huggingface_hub's resumable partial file
        snap = resolve_repo("owner/tiny")  # the same command again
    assert hub.cut["model.safetensors"] == 0  # the drop really happened
    assert hashlib.sha256((snap / "model.safetensors").read_bytes()).hexdigest() == want
    assert cached_snapshot("owner/tiny") == snap
    # resumed from the bytes kept before the cut (whole pieces, so at most the half sent), not restarted
    starts = [start for name, start in hub.ranges if name == "model.safetensors"]
    assert len(starts) == 1 and 0 < starts[0] <= len(body) // 2


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


# ---------------------------------------------------------------------------------------------------------------
# Every from_pretrained takes a repo id; paths never go to the Hub; no network fails fast (issue 13).

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat" with CLIP's vocabulary


def _shipped(*names: str) -> dict[str, bytes]:
    from groupvit_np._resources import data_dir

    return {n: (data_dir("weights") / "groupvit-tiny-random" / n).read_bytes() for n in names}


def test_every_from_pretrained_takes_a_cached_repo_id(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would fail at once if anything tried to connect
    tiny = {n: (FIXTURES / "model_hf_tiny" / n).read_bytes() for n in ("config.json", "model.safetensors")}
    _populate(env, "nvidia/groupvit-gcc-yfcc", {**tiny, **_shipped(*TOKENIZER_FILES, "preprocessor_config.json")})
    from groupvit_np import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer, GroupViTConfig, GroupViTTextModel

    repo = "nvidia/groupvit-gcc-yfcc"
    assert CLIPTokenizer.from_pretrained(repo)("a photo of a cat").input_ids == CAT_IDS
    assert CLIPTokenizer.from_pretrained(repo, revision=MAIN)("a photo of a cat").input_ids == CAT_IDS
    processor = CLIPProcessor.from_pretrained(repo)
    assert processor(text="a photo of a cat")["input_ids"].tolist() == [CAT_IDS]
    assert processor.image_processor.crop_size == CLIPImageProcessor.from_pretrained(repo).crop_size
    assert GroupViTConfig.from_pretrained(repo).vision_config.image_size == 30
    assert GroupViTTextModel.from_pretrained(repo).config.vocab_size == 99
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):  # a revision that is not cached
        CLIPTokenizer.from_pretrained(repo, revision="v2")


def test_a_tokenizer_downloads_without_the_weights(hub, env):
    files = _shipped(*TOKENIZER_FILES)
    shorter = files["tokenizer_config.json"].replace(b'"model_max_length": 77', b'"model_max_length": 16')
    hub.repos["owner/tok"] = {"main": (MAIN, {**files, "model.safetensors": b"never fetched"}),
                              "v1": (V1, {**files, "tokenizer_config.json": shorter})}  # fmt: skip
    from groupvit_np import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained("owner/tok")
    assert tok("a photo of a cat").input_ids == CAT_IDS and tok.model_max_length == 77
    assert "model.safetensors" not in _gets(hub) and "config.json" not in _gets(hub)
    assert CLIPTokenizer.from_pretrained("owner/tok", revision="v1").model_max_length == 16


@pytest.mark.parametrize(
    ("source", "is_id"),
    [
        ("nvidia/groupvit-gcc-yfcc", True),
        ("meta/Llama-3.1-8B", True),  # a dot inside a name is not a file extension
        ("./weights/demo", False),
        ("weights/demo/", False),
        ("/abs/owner/name", False),
        ("~/owner", False),
        ("~owner/name", False),
        ("ckpt/model.pth", False),
        ("ckpt/weights.safetensors", False),
        ("a/b/c", False),
        ("owner\\name", False),
        ("name", False),
        ("owner/../name", False),
    ],
)
def test_what_counts_as_a_repo_id(source, is_id):
    from groupvit_np.hub import looks_like_repo_id

    assert looks_like_repo_id(source) is is_id
    assert looks_like_repo_id(Path(source)) is False  # a Path object is always a path


@pytest.mark.parametrize("source", ["./weights/demo", "weights/demo/", "ckpt/model.pth", "a/b/c", "~/no/such"])
def test_a_mistyped_path_never_goes_to_the_hub(hub, source, capsys):
    import time

    from groupvit_np import CLIPTokenizer, GroupViTModel
    from groupvit_np.errors import CheckpointError

    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        CLIPTokenizer.from_pretrained(source)
    with pytest.raises(CheckpointError, match="no such file or folder"):
        GroupViTModel.from_pretrained(source)
    start = time.monotonic()
    rc = main(["segment", str(FIXTURES / "nowhere.png"), "--labels", "cat", "--weights", source])
    assert rc == 1 and capsys.readouterr().err.count("\n") == 1  # (the image is checked first: no such image)
    rc = main(["classify", __file__, "--labels", "cat,dog", "--weights", source])
    err = capsys.readouterr().err
    assert rc == 1 and err == f"groupvit-np classify: error: --weights {source}: no such file or folder\n"
    assert time.monotonic() - start < 5 and hub.log == []


def _unreachable_env(monkeypatch, endpoint: str) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)


def test_no_network_fails_within_seconds_in_one_line(env, monkeypatch, capsys):
    import time

    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _unreachable_env(monkeypatch, f"http://127.0.0.1:{port}")
    start = time.monotonic()  # huggingface_hub alone retries for 24 s (1+2+4+8+8), logging 11 lines
    assert main(["download", "owner/tiny"]) == 1
    err = capsys.readouterr().err
    assert time.monotonic() - start < 5
    assert err.startswith("groupvit-np download: error: cannot reach http://127.0.0.1:") and err.count("\n") == 1


def test_a_silent_network_times_out_quickly(env, monkeypatch):
    import time

    import groupvit_np.hub as hub_module

    _unreachable_env(monkeypatch, "http://10.255.255.1")  # reserved, unrouted: packets vanish (or fail at once)
    monkeypatch.setattr(hub_module, "CONNECT_TIMEOUT", 0.5)
    start = time.monotonic()
    with pytest.raises(HubError, match="cannot reach http://10.255.255.1"):
        resolve_repo("owner/tiny")
    assert time.monotonic() - start < 3
