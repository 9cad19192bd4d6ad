"""The torch-free reader: exact tensors from torch's own files, hostile pickles refused, damaged archives reported.

Hostile and damaged archives are built by hand from the opcodes torch writes, so those tests need no torch.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from nvlabs_helpers import TINY

from groupvit_np.checkpoints.torch_allowlist import OpaqueObject
from groupvit_np.checkpoints.torch_zip import load_torch_file
from groupvit_np.errors import TorchPickleError

# ---------------------------------------------------------------------------------------------------------------
# Hand-built archives: protocol-2 opcodes, as torch.save writes them.


def glob(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()  # GLOBAL


def data(value) -> bytes:
    return pickle.dumps(value, protocol=2)[2:-1]  # a plain value's opcodes without PROTO and STOP


def call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"  # MARK args TUPLE REDUCE


def storage(key: str, numel: int, stype: bytes) -> bytes:
    return b"(" + data("storage") + stype + data(key) + data("cpu") + data(numel) + b"tQ"  # BINPERSID


FLOAT = glob("torch", "FloatStorage")


def tensor(key, numel, size, stride, offset=0, stype=FLOAT) -> bytes:
    rebuild, hooks = glob("torch._utils", "_rebuild_tensor_v2"), call(glob("collections", "OrderedDict"))
    layout = data(offset) + data(tuple(size)) + data(tuple(stride))
    return call(rebuild, storage(key, numel, stype), layout, data(False), hooks)


def entries(**items: bytes) -> bytes:
    return b"}(" + b"".join(data(k) + v for k, v in items.items()) + b"u"  # EMPTY_DICT MARK ... SETITEMS


def archive(path: Path, body: bytes, storages: dict[str, bytes] | None = None, byteorder: bytes | None = b"little",
            prefix: str = "archive") -> Path:  # fmt: skip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", b"\x80\x02" + body + b".")
        zf.writestr(f"{prefix}/version", b"3\n")  # torch's reader insists on it; ours does not look
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            zf.writestr(f"{prefix}/data/{key}", raw)
    return path


F32 = np.arange(12, dtype=np.float32)  # one shared storage for the view tests


def views_archive(path: Path, byteorder: str = "little") -> Path:
    body = entries(
        whole=tensor("0", 12, (3, 4), (4, 1)),
        transposed=tensor("0", 12, (4, 3), (1, 4)),
        window=tensor("0", 12, (2, 2), (4, 1), offset=5),
        scalar=tensor("0", 12, (), (), offset=7),
        half=tensor("1", 3, (3,), (1,), stype=glob("torch", "HalfStorage")),
        bf16=tensor("2", 2, (2,), (1,), stype=glob("torch", "BFloat16Storage")),
    )
    order = "<" if byteorder == "little" else ">"
    raw = {"0": F32.astype(order + "f4").tobytes(), "1": np.array([1.5, -2, 65504], order + "f2").tobytes(),
           "2": np.array([0x3FC0, 0xC049], order + "u2").tobytes()}  # bf16 1.5 and -3.140625  # fmt: skip
    return archive(path, body, raw, byteorder.encode())


# ---------------------------------------------------------------------------------------------------------------
# Correct files.


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_views_share_one_storage_and_dtypes_are_right(tmp_path, byteorder):
    got = load_torch_file(views_archive(tmp_path / "v.pt", byteorder))
    grid = F32.reshape(3, 4)
    np.testing.assert_array_equal(got["whole"], grid)
    np.testing.assert_array_equal(got["transposed"], grid.T)
    np.testing.assert_array_equal(got["window"], grid[1:3, 1:3])
    assert got["scalar"].shape == () and got["scalar"] == 7
    assert got["half"].dtype == np.float16 and got["half"].tolist() == [1.5, -2, 65504]
    # bfloat16 is widened to float32 exactly: these two values are representable in both.
    assert got["bf16"].dtype == np.float32 and got["bf16"].tolist() == [1.5, -3.140625]
    assert all(a.dtype.isnative for a in got.values())


def test_select_reads_only_the_selected_entry(tmp_path):
    body = entries(model=tensor("0", 2, (2,), (1,)), optimizer=tensor("1", 2, (2,), (1,)))
    path = archive(tmp_path / "c.pth", body, {"0": np.float32([1, 2]).tobytes(), "1": np.float32([3, 4]).tobytes()})
    raw = bytearray(path.read_bytes())
    at = raw.rfind(np.float32([3, 4]).tobytes())
    raw[at] ^= 0xFF  # break storage 1's CRC: only a read of it can notice
    path.write_bytes(bytes(raw))
    assert load_torch_file(path, select="model").tolist() == [1, 2]
    with pytest.raises(TorchPickleError, match="CRC"):
        load_torch_file(path)


# ---------------------------------------------------------------------------------------------------------------
# Hostile pickles: every one would run code under plain pickle; ours refuses and nothing happens.


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle body, the global or construct the error must name)."""
    touch = data(f"touch {marker}")
    return {
        "os.system": (call(glob("os", "system"), touch), "os.system"),
        "posix.system": (call(glob("posix", "system"), touch), "posix.system"),
        "builtins.eval": (call(glob("builtins", "eval"), data(f"open({str(marker)!r}, 'w')")), "builtins.eval"),
        "builtins.open": (call(glob("builtins", "open"), data(str(marker)), data("w")), "builtins.open"),
        "subprocess.Popen": (call(glob("subprocess", "Popen"), data(["touch", str(marker)])), "subprocess.Popen"),
        "nested getattr": (
            entries(
                a=call(
                    glob("collections", "OrderedDict"),
                    call(
                        call(
                            glob("builtins", "getattr"),
                            call(glob("builtins", "__import__"), data("os")),
                            data("system"),
                        ),
                        touch,
                    ),
                )
            ),  # fmt: skip
            "builtins.getattr",
        ),
        "storage type os.system": (entries(w=tensor("0", 1, (1,), (1,), stype=glob("os", "system"))), "os.system"),
        "storage type builtins.exec": (tensor("0", 1, (1,), (1,), stype=glob("builtins", "exec")), "builtins.exec"),
        "storage type attribute walk": (
            tensor("0", 1, (1,), (1,), stype=glob("torch", "FloatStorage.__init__.__globals__")),
            "torch.FloatStorage.__init__.__globals__",
        ),
        "rebuild function attribute walk": (
            data("torch._utils") + data("_rebuild_tensor_v2.__globals__") + b"\x93",  # STACK_GLOBAL
            "torch._utils._rebuild_tensor_v2.__globals__",
        ),
        "storage type called": (call(glob("torch", "FloatStorage"), touch), "a call of torch.FloatStorage"),
        "allowed class via NEWOBJ": (glob("collections", "OrderedDict") + data(()) + b"\x81", "creating an instance"),
        "BUILD with tuple state": (call(glob("collections", "OrderedDict")) + data((touch,)) + b"b", "BUILD"),
        "BUILD on a tensor": (tensor("0", 1, (1,), (1,)) + data({"x": 1}) + b"b", "BUILD"),
        "INST opcode": (b"(" + touch + b"ios\nsystem\n", "INST"),
        "rebuild_from_type with a foreign function": (
            call(
                glob("torch._tensor", "_rebuild_from_type_v2"),
                glob("collections", "OrderedDict"),
                glob("torch", "Tensor"),
                data(()),
                data({}),
            ),  # fmt: skip
            "tensor subclass",
        ),
        "persistent id not a storage tuple": (data("x") + b"Q", "persistent id"),
        "bytearray claiming 4 EiB": (b"\x96" + (2**62).to_bytes(8, "little"), "BYTEARRAY8"),  # a memory bomb
    }


@pytest.mark.parametrize("name", list(_payloads(Path("m"))))
def test_hostile_pickles_are_refused_without_side_effects(tmp_path, name):
    marker = tmp_path / "pwned"
    body, named = _payloads(marker)[name]
    path = archive(tmp_path / "evil.bin", body, {"0": np.float32([0]).tobytes()})
    with pytest.raises(TorchPickleError, match="refusing") as err:
        load_torch_file(path)
    assert named in str(err.value)
    assert not marker.exists()


def test_the_payloads_are_live_under_plain_pickle(tmp_path):
    """Control: plain pickle does run the builtins.open payload, so the absence of the file above means something."""
    marker = tmp_path / "pwned"
    pickle.loads(b"\x80\x02" + _payloads(marker)["builtins.open"][0] + b".").close()
    assert marker.exists()


def test_opaque_mode_keeps_foreign_objects_inert(tmp_path):
    marker = tmp_path / "pwned"
    body = entries(config=_payloads(marker)["os.system"][0], model=tensor("0", 1, (1,), (1,)))
    got = load_torch_file(archive(tmp_path / "c.pth", body, {"0": np.float32([5]).tobytes()}), opaque=True)
    assert isinstance(got["config"], OpaqueObject) and got["config"].name == "os.system"
    assert got["model"].tolist() == [5] and not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# Damaged or lying files: one clear error each.


def _good(tmp_path: Path) -> Path:
    return views_archive(tmp_path / "good.pt")


@pytest.mark.parametrize("keep", [0.5, 0.97, 100])
def test_truncated_archive(tmp_path, keep):
    raw = _good(tmp_path).read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(raw[: int(len(raw) * keep) if keep < 1 else keep])
    with pytest.raises(TorchPickleError, match=re.escape(f"{bad}: corrupt or unreadable torch file")):
        load_torch_file(bad)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a torch checkpoint"),
        (b"hello, world", "not a torch checkpoint"),
        (b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19" + b"\x00" * 32, "legacy torch format"),
    ],
)
def test_wrong_magic(tmp_path, content, message):
    (tmp_path / "x.bin").write_bytes(content)
    with pytest.raises(TorchPickleError, match=message):
        load_torch_file(tmp_path / "x.bin")


@pytest.mark.parametrize(
    ("numel", "size", "stride", "offset", "message"),
    [
        (4, (10,), (1,), 0, "reaches element 9"),  # more elements than the storage holds
        (4, (2,), (1,), 3, "reaches element 4"),  # offset pushes the end past the storage
        (4, (2, 2), (3, 1), 0, "reaches element 4"),  # strides do
        (4, (2,), (-1,), 1, "bad tensor layout"),
        (4, (True,), (1,), 0, "bad tensor layout"),  # a bool is not a size
        (4, (10**9,), (0,), 0, "expand"),  # stride 0: a 4-element file cannot become a 4 GB array
    ],
)
def test_tensor_layout_lies(tmp_path, numel, size, stride, offset, message):
    path = archive(tmp_path / "l.pt", tensor("0", numel, size, stride, offset), {"0": bytes(4 * numel)})
    with pytest.raises(TorchPickleError, match=message):
        load_torch_file(path)


@pytest.mark.parametrize(
    ("body", "storages", "message"),
    [
        (tensor("0", 8, (8,), (1,)), {"0": bytes(16)}, "declares 8 x torch.FloatStorage"),
        (tensor("0", 2, (2,), (1,)), {}, "has no member"),
        (tensor("0", 2, (2,), (1,), stype=glob("torch", "ComplexFloatStorage")), {"0": bytes(16)},
         "unsupported tensor dtype"),
        (data("x")[:-3], {}, "corrupt"),  # the pickle stops mid-opcode
        (b"]" * 100 + b"a" * 99, {}, "nested more than 64 deep"),
    ],
)  # fmt: skip
def test_lying_records(tmp_path, body, storages, message):
    with pytest.raises(TorchPickleError, match=message):
        load_torch_file(archive(tmp_path / "r.pt", body, storages))


def test_shared_references_are_walked_once(tmp_path):
    # t0 = [w]; t(i+1) = (t(i), t(i)): 60 levels, 2^60 paths to the tensor. A walk without memory would not end.
    body = b"]" + tensor("0", 1, (1,), (1,)) + b"a" + b"r\x00\x00\x00\x00"  # EMPTY_LIST w APPEND LONG_BINPUT 0
    for i in range(60):
        get = b"j" + i.to_bytes(4, "little")  # LONG_BINGET i
        body += get + get + b"\x86" + b"r" + (i + 1).to_bytes(4, "little")  # TUPLE2 LONG_BINPUT i + 1
    got = load_torch_file(archive(tmp_path / "dag.pt", body, {"0": np.float32([3]).tobytes()}))
    leaf = got
    for _ in range(60):
        assert leaf[0] is leaf[1]  # still shared after the walk
        leaf = leaf[0]
    assert leaf[0].tolist() == [3]


@pytest.mark.parametrize("target", ["pickle", "archive"])
def test_random_damage_gives_an_error_or_a_result_never_a_crash(tmp_path, target):
    """Flip a few random bytes of data.pkl (or of the whole file) 150 times: each load finishes, and any failure is
    a TorchPickleError (what zipfile, pickle and NumPy raise is translated)."""
    good = views_archive(tmp_path / "good.pt")
    with zipfile.ZipFile(good) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "loaded": 0}
    for _ in range(150):
        raw = bytearray(members["archive/data.pkl"] if target == "pickle" else good.read_bytes())
        for at in rng.integers(0, len(raw), size=rng.integers(1, 4)):
            raw[at] = rng.integers(0, 256)
        path = tmp_path / "damaged.pt"
        if target == "pickle":
            with zipfile.ZipFile(path, "w") as zf:
                for name, content in members.items():
                    zf.writestr(name, bytes(raw) if name.endswith("data.pkl") else content)
        else:
            path.write_bytes(bytes(raw))
        try:
            load_torch_file(path)
            outcomes["loaded"] += 1  # the flip hit a byte nobody reads (a name, a padding field)
        except TorchPickleError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100


def test_unknown_byteorder_and_missing_pickle(tmp_path):
    with pytest.raises(TorchPickleError, match="byteorder"):
        load_torch_file(archive(tmp_path / "b.pt", data(1), byteorder=b"middle"))
    with zipfile.ZipFile(tmp_path / "z.pt", "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(TorchPickleError, match="data.pkl"):
        load_torch_file(tmp_path / "z.pt")


# ---------------------------------------------------------------------------------------------------------------
# Against torch itself.


@pytest.mark.reference
def test_hand_built_archive_reads_the_same_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    ours = load_torch_file(views_archive(tmp_path / "v.pt"))
    theirs = torch.load(tmp_path / "v.pt", weights_only=True)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value.float().numpy() if key == "bf16" else value.numpy())


@pytest.mark.reference
def test_torch_save_of_every_plain_kind(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24.0).reshape(4, 6)
    obj = {
        "transposed": base.t(), "window": base[1:3, 2:5], "scalar": base[2, 3], "empty": torch.zeros(0, 3),
        "bf16": torch.randn(5, 3).bfloat16(), "bf16_t": torch.randn(4, 3).bfloat16().t(), "f16": torch.randn(3).half(),
        "f64": torch.randn(2, dtype=torch.float64), "i64": torch.tensor([-(2**40)]),
        "i32": torch.tensor([7], dtype=torch.int32),
        "i16": torch.tensor([-3], dtype=torch.int16), "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.tensor([250], dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "param": torch.nn.Parameter(torch.ones(2)), "position_ids": torch.arange(5).expand((1, -1)),
        "nested": [base, (base[0], 3, "x")], "set": {1, 2}, "bytes": b"abc", "empty_bytes": b"", "none": None,
    }  # fmt: skip
    torch.save(obj, tmp_path / "mix.pt")
    got = load_torch_file(tmp_path / "mix.pt")
    for key, want in obj.items():
        if isinstance(want, torch.Tensor):
            want = want.detach().float() if want.dtype == torch.bfloat16 else want.detach()
            assert got[key].dtype == want.numpy().dtype and got[key].shape == tuple(want.shape), key
            np.testing.assert_array_equal(got[key], want.numpy(), err_msg=key)
    np.testing.assert_array_equal(got["nested"][0], base.numpy())
    assert got["nested"][1][1:] == (3, "x") and np.shares_memory(got["nested"][1][0], got["nested"][0])
    assert (got["set"], got["bytes"], got["empty_bytes"], got["none"]) == ({1, 2}, b"abc", b"", None)


@pytest.mark.reference
def test_module_state_dict_with_its_metadata_attribute(tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    torch.save(module.state_dict(), tmp_path / "sd.pt")  # an OrderedDict plus BUILD of its `_metadata`
    got = load_torch_file(tmp_path / "sd.pt")
    assert list(got) == list(module.state_dict()) and got["1.num_batches_tracked"].dtype == np.int64
    torch.save(module, tmp_path / "whole.pt")  # a pickled module is code, not a checkpoint
    with pytest.raises(TorchPickleError, match="torch.nn.modules.container.Sequential"):
        load_torch_file(tmp_path / "whole.pt")


@pytest.mark.reference
def test_legacy_torch_format_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(TorchPickleError, match="legacy torch format"):
        load_torch_file(tmp_path / "old.pt")


def _hf_bin(tmp_path: Path, config_kwargs: dict) -> tuple[Path, dict]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GroupViTModel(transformers.GroupViTConfig(**config_kwargs)).eval()
    model.save_pretrained(tmp_path, safe_serialization=False)
    return tmp_path / "pytorch_model.bin", model.state_dict()


@pytest.mark.reference
def test_tiny_hf_bin_is_exactly_torchs(tmp_path):
    path, state = _hf_bin(tmp_path, TINY)
    got = load_torch_file(path)
    assert list(got) == list(state)
    for key, value in state.items():
        assert got[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)


@pytest.mark.reference
@pytest.mark.slow
def test_full_size_hf_bin_exact_and_one_copy_of_memory(tmp_path):
    import tracemalloc

    path, state = _hf_bin(tmp_path, {})
    tracemalloc.start()
    got = load_torch_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    total = sum(a.nbytes for a in got.values())
    print(f"full-size pytorch_model.bin: {len(got)} tensors, {total / 2**20:.1f} MiB; peak traced allocation while "
          f"loading {peak / 2**20:.1f} MiB ({peak / total:.3f} x the weights)")  # fmt: skip
    # One copy of the weights, plus one 4 MiB read chunk and the parsed pickle: 5% and 16 MiB cover both.
    assert peak < 1.05 * total + 16 * 2**20
    assert len(got) == len(state) == 502
    for key, value in state.items():
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)
