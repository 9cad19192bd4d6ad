"""NVlabs -> HF conversion, config inference, the safetensors writer, `groupvit-np convert`, and the real weights."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from parity import assert_close

from groupvit_np import CheckpointError, GroupViTConfig
from groupvit_np.checkpoints.convert import convert, write_checkpoint
from groupvit_np.checkpoints.nvlabs import (
    ChecksumWarning,
    check_hash_prefix,
    load_nvlabs,
    nvlabs_to_hf,
    rename_key,
    sha256_file,
)
from groupvit_np.checkpoints.safetensors_io import read_safetensors, to_bfloat16_bits
from groupvit_np.checkpoints.shapes import expected_shapes, infer_config
from groupvit_np.checkpoints.weights import load_checkpoint
from groupvit_np.cli import main

TINY_DIR = FIXTURES / "model_hf_tiny"  # a committed HF safetensors checkpoint (float16 values)

# ---------------------------------------------------------------------------------------------------------------
# Renaming and config inference (no torch).


@pytest.mark.parametrize(
    ("nvlabs", "hf"),
    [
        ("img_encoder.pos_embed", "vision_model.embeddings.position_embeddings"),
        ("img_encoder.patch_embed.norm.bias", "vision_model.embeddings.layernorm.bias"),
        ("img_encoder.layers.0.blocks.5.attn.proj.weight",
         "vision_model.encoder.stages.0.layers.5.self_attn.out_proj.weight"),
        ("img_encoder.layers.2.blocks.1.norm2.bias", "vision_model.encoder.stages.2.layers.1.layer_norm2.bias"),
        ("img_encoder.layers.1.downsample.pre_assign_attn.attn.proj.bias",
         "vision_model.encoder.stages.1.downsample.pre_assign_attn.attn.out_proj.bias"),
        ("img_encoder.layers.1.downsample.pre_assign_attn.norm2.weight",
         "vision_model.encoder.stages.1.downsample.pre_assign_attn.norm2.weight"),  # no layer_norm2 inside pre_assign
        ("img_encoder.layers.0.downsample.assign.proj.weight",
         "vision_model.encoder.stages.0.downsample.assign.proj.weight"),
        ("img_encoder.layers.1.group_projector.1.fc2.bias", "vision_model.encoder.stages.1.group_projector.1.fc2.bias"),
        ("img_encoder.norm.weight", "vision_model.layernorm.weight"),
        ("text_encoder.positional_embedding", "text_model.embeddings.position_embedding.weight"),
        ("text_encoder.transformer.resblocks.11.attn.out_proj.bias",
         "text_model.encoder.layers.11.self_attn.out_proj.bias"),
        ("text_encoder.transformer.resblocks.3.mlp.c_proj.weight", "text_model.encoder.layers.3.mlp.fc2.weight"),
        ("text_encoder.transformer.resblocks.3.ln_2.weight", "text_model.encoder.layers.3.layer_norm2.weight"),
        ("text_encoder.ln_final.bias", "text_model.final_layer_norm.bias"),
        ("img_projector.linear_hidden.1.running_var", "visual_projection.1.running_var"),
        ("text_projector.linear_out.bias", "text_projection.3.bias"),
    ],
)  # fmt: skip
def test_rename_rules(nvlabs, hf):
    assert rename_key(nvlabs) == hf


def test_fused_attention_split_and_conv_squeeze():
    qkv = np.arange(18, dtype=np.float32).reshape(6, 3)
    state = {
        "img_encoder.layers.1.blocks.0.attn.qkv.weight": qkv,
        "text_encoder.transformer.resblocks.2.attn.in_proj_bias": np.arange(6, dtype=np.float32),
        "img_projector.linear_out.weight": np.ones((4, 5, 1), np.float32),
        "multi_label_logit_scale": np.float32(4.2),
        "logit_scale": np.float32(4.0),
    }
    hf = nvlabs_to_hf(state)
    stage = "vision_model.encoder.stages.1.layers.0.self_attn"
    np.testing.assert_array_equal(hf[f"{stage}.k_proj.weight"], qkv[2:4])  # rows [d:2d] are k
    assert hf["text_model.encoder.layers.2.self_attn.v_proj.bias"].tolist() == [4, 5]
    assert hf["visual_projection.3.weight"].shape == (4, 5)
    assert "multi_label_logit_scale" not in hf and len(hf) == 3 + 3 + 1 + 1
    with pytest.raises(CheckpointError, match="HF checkpoint already"):
        nvlabs_to_hf({"vision_model.layernorm.weight": np.ones(2)})


def test_infer_config_reproduces_the_default_full_size_config():
    # Zero-stride arrays: every shape of the 502 tensors without allocating 223 MB.
    state = {k: np.broadcast_to(np.float32(0), s) for k, s in expected_shapes(GroupViTConfig()).items()}
    assert infer_config(state).to_dict() == GroupViTConfig().to_dict()
    del state["visual_projection.3.weight"]
    with pytest.raises(CheckpointError, match="visual_projection.3.weight"):
        infer_config(state)


def test_hash_prefix_in_the_file_name(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(b"groupvit")
    digest = sha256_file(blob)
    good, bad, plain = tmp_path / f"w-{digest[:8]}.pth", tmp_path / "w-0badc0de.pth", tmp_path / "w.pth"
    for path in (good, bad, plain):
        shutil.copy(blob, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_hash_prefix(good) is True and check_hash_prefix(plain) is None
    with pytest.warns(ChecksumWarning, match="0badc0de"):
        assert check_hash_prefix(bad) is False


# ---------------------------------------------------------------------------------------------------------------
# The writer, against our own reader (no torch).


def test_bfloat16_rounding_cases():
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, np.inf, -np.inf, np.nan, 3.4e38, 1e-40], np.float32)
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even gives 1; 1 + 3 * 2^-8 ties upward to 1 + 2^-6 (even).
    assert to_bfloat16_bits(x).tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F80, 0xFF80, 0x7FC0, 0x7F80, 0x0001]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_written_checkpoint_reads_back(tmp_path, dtype):
    config, state = load_checkpoint(TINY_DIR)
    dst = write_checkpoint(config, state, tmp_path / "out", dtype=dtype)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]
    config2, state2 = load_checkpoint(dst)
    assert config2.to_dict() == config.to_dict()
    for key, value in state.items():
        want = value.astype(np.float32)
        if dtype == "bfloat16":  # the stored bits, widened back: exact
            want = (to_bfloat16_bits(want).astype(np.uint32) << 16).view(np.float32)
        elif dtype == "float16":
            want = want.astype(np.float16)
        if value.dtype.kind != "f":
            want = value
        assert state2[key].dtype == want.dtype or dtype == "bfloat16", key
        np.testing.assert_array_equal(state2[key], want, err_msg=key)
    assert state2["visual_projection.1.num_batches_tracked"].dtype == np.int64


def test_existing_destination_needs_force(tmp_path):
    dst = tmp_path / "out"
    convert(TINY_DIR, dst)
    before = (dst / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        convert(TINY_DIR, dst, dtype="float16")
    assert (dst / "model.safetensors").read_bytes() == before
    convert(TINY_DIR, dst, dtype="float16", force=True)
    assert (dst / "model.safetensors").stat().st_size < len(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left behind


@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_conversion_leaves_nothing_half_written(tmp_path, monkeypatch, existing):
    import groupvit_np.checkpoints.safetensors_io as C

    dst = tmp_path / "out"
    if existing:
        convert(TINY_DIR, dst)
    before = {p.name: p.read_bytes() for p in dst.iterdir()} if existing else None
    calls, real = [], C._encoded

    def dying(*args):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt  # like Ctrl-C while the weights are being written
        return real(*args)

    monkeypatch.setattr(C, "_encoded", dying)
    with pytest.raises(KeyboardInterrupt):
        convert(TINY_DIR, dst, dtype="bfloat16", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert {p.name: p.read_bytes() for p in dst.iterdir()} == before


def _safetensors_bytes(tmp_path: Path) -> bytes:
    config, state = load_checkpoint(TINY_DIR)
    return (write_checkpoint(config, state, tmp_path / "good") / "model.safetensors").read_bytes()


def _with_header(raw: bytes, edit) -> bytes:
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    blob = json.dumps(header).encode()
    return len(blob).to_bytes(8, "little") + blob + raw[8 + n :]


def _first(header: dict) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated data
        lambda raw: raw[:20],  # truncated header
        lambda raw: (10**12).to_bytes(8, "little") + raw[8:],  # header length beyond the file
        lambda raw: raw[:8] + b"{" * 7 + raw[15:],  # header is not JSON
        lambda raw: _with_header(raw, lambda h: _first(h).update(data_offsets=[0, 10**12])),  # range past the end
        lambda raw: _with_header(raw, lambda h: _first(h).update(shape=[10**6, 10**6])),  # shape x dtype != range
        lambda raw: _with_header(raw, lambda h: _first(h).update(dtype="Q99")),  # unknown dtype
    ],
    ids=["truncated", "truncated-header", "huge-header-length", "bad-json", "offset-lie", "shape-lie", "dtype-lie"],
)
def test_damaged_safetensors_give_a_clear_error(tmp_path, damage):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(_safetensors_bytes(tmp_path)))
    with pytest.raises(CheckpointError, match="safetensors"):
        read_safetensors(bad)


# ---------------------------------------------------------------------------------------------------------------
# The command line (no torch).


def test_cli_convert_and_its_user_errors(tmp_path, capsys):
    dst = tmp_path / "out"
    assert main(["convert", str(TINY_DIR), str(dst), "--dtype", "float16"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["convert", str(TINY_DIR), str(dst)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["convert", str(TINY_DIR), str(dst), "--force"]) == 0
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o2")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["convert", str(TINY_DIR), str(tmp_path / "o3"), "--dtype", "int8"]) == 2  # argparse's usage error
    assert main([]) == 2


# ---------------------------------------------------------------------------------------------------------------
# NVlabs releases and transformers (torch + transformers).


@pytest.fixture
def release(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from nvlabs_helpers import save_release, tiny_hf_model

    model = tiny_hf_model(seed=1)
    return model, save_release(model.state_dict(), tmp_path)


@pytest.mark.reference
def test_release_converts_back_to_exactly_the_hf_tensors(release):
    from nvlabs_helpers import TINY

    model, path = release
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the name carries the right hash: no ChecksumWarning
        config, state = load_nvlabs(path)
    assert config.to_dict() == GroupViTConfig.from_dict(TINY).to_dict()
    hf = model.state_dict()
    assert set(state) == set(hf)
    for key, value in hf.items():
        assert state[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(state[key], value.numpy(), err_msg=key)


@pytest.mark.reference
def test_release_with_a_wrong_hash_warns_and_still_loads(release, tmp_path):
    _, path = release
    wrong = tmp_path / "group_vit_gcc_tiny_30e-00000000.pth"
    shutil.copy(path, wrong)
    with pytest.warns(ChecksumWarning, match="00000000"):
        load_nvlabs(wrong)


@pytest.mark.reference
def test_strict_reader_refuses_the_release_wrapper(release):
    from groupvit_np.checkpoints.torch_zip import load_torch_file
    from groupvit_np.errors import TorchPickleError

    _, path = release  # the wrapper pickles a defaultdict and a config object: fine for load_nvlabs, not strict mode
    with pytest.raises(TorchPickleError, match="refusing the global"):
        load_torch_file(path)


PIXELS = np.random.default_rng(0).uniform(-2, 2, (2, 3, 32, 32)).astype(np.float32)
IDS = np.array([[97, 5, 17, 98], [97, 40, 98, 98]])  # BOS ... EOS, the second right-padded with EOS
MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])


def _hf_logits(model, torch):
    pixels, ids, mask = torch.from_numpy(PIXELS), torch.from_numpy(IDS), torch.from_numpy(MASK)
    default = torch.get_default_dtype()
    torch.set_default_dtype(model.dtype)  # HF builds its float64 causal mask in the default dtype
    try:
        with torch.no_grad():
            return model(input_ids=ids, pixel_values=pixels.to(model.dtype), attention_mask=mask).logits_per_image
    finally:
        torch.set_default_dtype(default)


@pytest.mark.reference
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_converted_release_loads_in_transformers_identically(release, tmp_path, dtype):
    import torch
    import transformers

    model, path = release
    dst = convert(path, tmp_path / "hf", dtype=dtype)
    loaded, info = transformers.GroupViTModel.from_pretrained(dst, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    theirs = getattr(torch, dtype)
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert torch.equal(got.to(theirs) if got.is_floating_point() else got,
                           value.to(theirs) if value.is_floating_point() else value), key  # fmt: skip
    if dtype == "float32":  # same weights, same CPU kernels: bit-identical logits
        assert torch.equal(_hf_logits(loaded.eval(), torch), _hf_logits(model, torch))


@pytest.mark.reference
def test_our_model_from_the_release_matches_transformers(release):
    import torch

    from groupvit_np import GroupViTModel

    model, path = release
    ours = GroupViTModel.from_pretrained(path, dtype="float64")
    ref = _hf_logits(model.double(), torch).numpy()
    out = ours(input_ids=IDS, pixel_values=PIXELS.astype(np.float64), attention_mask=MASK)
    # Both in float64 from the same float32 weights: only summation order differs.
    assert_close(np.asarray(out.logits_per_image), ref, atol=1e-9)


@pytest.mark.reference
def test_convert_hf_bin_folder_keeps_config_and_tokenizer_files(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from nvlabs_helpers import tiny_hf_model

    src = tmp_path / "src"
    tiny_hf_model(seed=2).save_pretrained(src, safe_serialization=False)
    for name in ("vocab.json", "merges.txt", "preprocessor_config.json"):
        (src / name).write_text("{}\n" if name.endswith(".json") else "#version: 0.2\n")
    dst = convert(src, tmp_path / "dst")
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        ["config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json"]
    )
    assert GroupViTConfig.from_pretrained(dst).to_dict() == GroupViTConfig.from_pretrained(src).to_dict()
    transformers.GroupViTModel.from_pretrained(dst)


# ---------------------------------------------------------------------------------------------------------------
# The released weights, when present on this machine.

REAL = [
    ("yfcc", "GROUPVIT_YFCC", "nvidia/groupvit-gcc-yfcc", [[13.3523, 6.3629]]),
    ("redcaps", "GROUPVIT_REDCAPS", "nvidia/groupvit-gcc-redcaps", [[16.1873, 8.6230]]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "env", "repo", "expected"), REAL, ids=[r[0] for r in REAL])
def test_real_checkpoint_logits(name, env, repo, expected):
    from groupvit_np.hub import cached_snapshot

    weights = Path(os.environ[env]) if os.environ.get(env) else cached_snapshot(repo)
    image = os.environ.get("GROUPVIT_COCO_IMAGE")
    how = (f"set {env} to an HF folder, pytorch_model.bin or NVlabs .pth of {repo} (or run `groupvit-np download "
           f"{repo}`), and GROUPVIT_COCO_IMAGE to COCO val2017 000000039769.jpg")  # fmt: skip
    if weights is None or not weights.exists() or not image:
        pytest.skip(f"the {name} weights or the COCO image are not here: {how}")
    folder = weights if weights.is_dir() else weights.parent
    processor_dir = next(
        (p for p in (folder, os.environ.get("GROUPVIT_PROCESSOR"), cached_snapshot(repo))
         if p is not None and (Path(p) / "preprocessor_config.json").is_file()),
        None,
    )  # fmt: skip
    # None: the shipped CLIP tokenizer and CLIP preprocessing, the same settings as the Hub repos' files.
    from PIL import Image

    import groupvit_np

    model = groupvit_np.GroupViTModel.from_pretrained(weights)
    processor = groupvit_np.CLIPProcessor.from_pretrained(processor_dir)
    inputs = processor(text=["a photo of a cat", "a photo of a dog"], images=Image.open(image), return_tensors="np",
                       padding=True)  # fmt: skip
    logits = np.asarray(model(**inputs).logits_per_image)
    # The tolerance transformers' conversion script checked these published values with.
    assert_close(logits, expected, atol=1e-3)


@pytest.mark.reference
def test_nvlabs_conversion_writes_clip_tokenizer_files_both_libraries_read(tmp_path):
    transformers = pytest.importorskip("transformers")
    from nvlabs_helpers import TINY, save_release, tiny_hf_model

    from groupvit_np import CLIPProcessor

    text = {**TINY["text_config"], "vocab_size": 49408, "bos_token_id": 49406, "eos_token_id": 49407}
    hf = tiny_hf_model(seed=3, config={**TINY, "text_config": text})
    pth = save_release(hf.state_dict(), tmp_path)
    dst = convert(pth, tmp_path / "converted")
    ours = CLIPProcessor.from_pretrained(dst)
    theirs = transformers.CLIPProcessor.from_pretrained(dst)
    caption = "a photo of a cat"
    expected = [[49406, 320, 1125, 539, 320, 2368, 49407]]
    assert ours(text=[caption]).input_ids.tolist() == theirs(text=[caption]).input_ids == expected


def test_bare_weights_file_infers_its_config(tmp_path):
    import shutil

    from groupvit_np import GroupViTModel

    src = FIXTURES / "model_small_legacy" / "model.safetensors"
    shutil.copyfile(src, tmp_path / "model.safetensors")
    bare = GroupViTModel.from_pretrained(tmp_path / "model.safetensors")
    assert bare.config.vision_config.depths == [2, 1, 2] and bare.config.projection_intermediate_dim == 96
