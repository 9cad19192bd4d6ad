"""Configs (HF defaults, 2022 legacy files, round trips) and safetensors loading with strict validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES
from safetensors.numpy import save_file

from groupvit_np import CheckpointError, GroupViTConfig, GroupViTModel
from groupvit_np.checkpoints.safetensors_io import read_safetensors
from groupvit_np.checkpoints.shapes import expected_shapes, validate

# The shape of nvidia/groupvit-gcc-yfcc's config.json (June 2022): nested *_config_dict entries and text ids 0/2.
LEGACY = {
    "architectures": ["GroupViTModel"],
    "model_type": "groupvit",
    "projection_dim": 256,
    "projection_intermediate_dim": 4096,
    "text_config": {"bos_token_id": 49406, "eos_token_id": 49407},
    "text_config_dict": {"bos_token_id": 0, "eos_token_id": 2, "hidden_size": 256, "num_attention_heads": 4},
    "vision_config_dict": {"hidden_size": 384, "depths": [6, 3, 3], "num_group_tokens": [64, 8, 0]},
    "torch_dtype": "float32",
    "transformers_version": "4.21.0.dev0",
}


def test_defaults_are_hfs():
    c = GroupViTConfig()
    assert (c.text_config.vocab_size, c.vision_config.hidden_size, c.projection_dim) == (49408, 384, 256)
    assert c.vision_config.num_output_groups == [64, 8, 8] and c.text_config.eos_token_id == 49407


def test_legacy_config_dict_overrides_like_transformers():
    c = GroupViTConfig.from_dict(LEGACY)
    assert c.text_config.eos_token_id == 2 and c.text_config.legacy_eos_pooling
    assert c.text_config.bos_token_id == 0


@pytest.mark.reference
def test_legacy_config_agrees_with_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps(LEGACY))
    hf = transformers.GroupViTConfig.from_pretrained(tmp_path)
    ours = GroupViTConfig.from_pretrained(tmp_path)
    for key, value in ours.text_config.to_dict().items():
        assert getattr(hf.text_config, key) == value, key
    for key, value in ours.vision_config.to_dict().items():
        assert getattr(hf.vision_config, key) == value, key


@pytest.mark.reference
def test_save_pretrained_is_read_back_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    c = GroupViTConfig.from_pretrained(FIXTURES / "model_small_legacy")
    c.save_pretrained(tmp_path)
    hf = transformers.GroupViTConfig.from_pretrained(tmp_path)
    assert hf.vision_config.depths == [2, 1, 2] and hf.text_config.eos_token_id == 2
    assert hf.projection_intermediate_dim == 96
    assert GroupViTConfig.from_pretrained(tmp_path) == c


def test_expected_shapes_cover_the_default_state_dict():
    shapes = expected_shapes(GroupViTConfig())
    assert len(shapes) == 500  # 502 entries minus the two ignored num_batches_tracked
    assert shapes["vision_model.encoder.stages.1.group_projector.1.fc1.weight"] == (192, 64)


def _fixture_state():
    return read_safetensors(FIXTURES / "model_small_legacy" / "model.safetensors")


def test_bfloat16_and_float16_files_load_exactly(tmp_path):
    state = _fixture_state()
    assert all(v.dtype == np.float16 for k, v in state.items() if not k.endswith("num_batches_tracked"))
    # bfloat16 keeps 8 mantissa bits: write truncated float32 bits as bf16 by hand, read them back.
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 24]}}).encode()
    (tmp_path / "bf.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    got = read_safetensors(tmp_path / "bf.safetensors")["w"]
    np.testing.assert_array_equal(got, (bits.astype(np.uint32) << 16).view(np.float32))
    assert np.abs(got - x).max() <= np.abs(x).max() * 2**-7  # truncation error of bf16


def _write_checkpoint(tmp_path, state):
    (tmp_path / "config.json").write_text((FIXTURES / "model_small_legacy" / "config.json").read_text())
    save_file(state, str(tmp_path / "model.safetensors"))


def test_missing_extra_and_misshapen_keys_are_named(tmp_path):
    state = _fixture_state()
    del state["text_model.final_layer_norm.bias"]
    state["text_model.surprise"] = np.zeros(3, np.float16)
    state["visual_projection.3.weight"] = np.zeros((5, 5), np.float16)
    _write_checkpoint(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        GroupViTModel.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "text_model.final_layer_norm.bias" in msg and "text_model.surprise" in msg
    assert "visual_projection.3.weight has shape (5, 5), the config implies (16, 96)" in msg


def test_sharded_index_loads_like_a_single_file(tmp_path):
    state = _fixture_state()
    keys = sorted(state)
    shards = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2 :]}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((FIXTURES / "model_small_legacy" / "config.json").read_text())
    a = GroupViTModel.from_pretrained(tmp_path, dtype="float64")
    b = GroupViTModel.from_pretrained(FIXTURES / "model_small_legacy", dtype="float64")
    ids = np.array([[0, 5, 2]])
    np.testing.assert_array_equal(a.get_text_features(ids), b.get_text_features(ids))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "lying_header"])
def test_corrupt_safetensors_give_clear_errors(tmp_path, damage):
    src = (FIXTURES / "model_small_legacy" / "model.safetensors").read_bytes()
    if damage == "truncate":
        data = src[: len(src) // 2]
    elif damage == "garbage":
        data = b"not a safetensors file at all"
    else:
        n = int.from_bytes(src[:8], "little")
        header = json.loads(src[8 : 8 + n])
        key = next(k for k in header if k != "__metadata__")
        header[key]["shape"] = [10_000, 10_000]
        h = json.dumps(header).encode()
        data = len(h).to_bytes(8, "little") + h + src[8 + n :]
    (tmp_path / "model.safetensors").write_bytes(data)
    (tmp_path / "config.json").write_text((FIXTURES / "model_small_legacy" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        GroupViTModel.from_pretrained(tmp_path)


def test_validate_ignores_buffers_hf_never_reads():
    shapes = {"a": (2,)}
    validate({"a": np.zeros(2), "x.num_batches_tracked": np.zeros(()), "position_ids": np.zeros((1, 77))}, shapes)


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        GroupViTModel.from_pretrained(tmp_path / "nowhere" / "x.safetensors")
    (tmp_path / "w.npz").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        GroupViTModel.from_pretrained(tmp_path / "w.npz")


def test_reader_matches_the_safetensors_package_and_does_not_copy():
    from safetensors.numpy import load_file

    path = FIXTURES / "model_small_legacy" / "model.safetensors"
    ours, theirs = read_safetensors(path), load_file(str(path))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key])
        assert ours[key].dtype == theirs[key].dtype and not ours[key].flags.writeable  # views into the map


def test_overlapping_tensors_are_refused(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}  # fmt: skip
    h = json.dumps(header).encode()
    (tmp_path / "x.safetensors").write_bytes(len(h).to_bytes(8, "little") + h + bytes(12))
    with pytest.raises(CheckpointError, match="overlap"):
        read_safetensors(tmp_path / "x.safetensors")


@pytest.mark.parametrize("tower", ["text", "vision"])
def test_a_tower_checkpoint_loads_into_its_tower_model(tower, tmp_path):
    # The layout HF's GroupViT{Text,Vision}Model.save_pretrained writes: the tower's own config (model_type
    # groupvit_<tower>_model) and only `<tower>_model.*` tensors. The live test checks files transformers wrote.
    from groupvit_np import GroupViTTextModel, GroupViTVisionModel

    src = FIXTURES / "model_hf_tiny"
    config = json.loads((src / "config.json").read_text())[f"{tower}_config"]
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": f"groupvit_{tower}_model"}))
    state = read_safetensors(src / "model.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items() if k.startswith(f"{tower}_model.")},
              str(tmp_path / "model.safetensors"))  # fmt: skip
    cls = GroupViTTextModel if tower == "text" else GroupViTVisionModel
    ours, reference = cls.from_pretrained(tmp_path, dtype="float64"), cls.from_pretrained(src, dtype="float64")
    assert ours.config == reference.config
    inputs = np.load(src / "inputs.npz")
    args = (inputs["input_ids"], inputs["attention_mask"]) if tower == "text" else (inputs["pixel_values"],)
    np.testing.assert_array_equal(ours(*args).pooler_output, reference(*args).pooler_output)  # same weights, same code
    with pytest.raises(CheckpointError, match=f"only the {tower} tower: load it with {cls.__name__}"):
        GroupViTModel.from_pretrained(tmp_path)
