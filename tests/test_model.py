"""The model against transformers' float64 outputs (committed fixtures), on every backend.

Fixtures come from tests/reference_model.py: HF GroupViT with every parameter perturbed, run in float64.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES
from parity import assert_close, assert_matches_hf64

from groupvit_np import GroupViTModel, GroupViTTextModel, GroupViTVisionModel
from groupvit_np.backend import to_numpy

NAMES = ["hf_tiny", "small_legacy"]


def load_fixture(name):
    d = FIXTURES / f"model_{name}"
    return d, dict(np.load(d / "inputs.npz")), dict(np.load(d / "outputs.npz"))


def flatten(prefix, value, out):
    if value is None:
        return
    if isinstance(value, tuple | list):
        for i, v in enumerate(value):
            flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = to_numpy(value)


def run_all(model, inputs):
    o = model(**inputs, return_loss=True, output_attentions=True, output_hidden_states=True, output_segmentation=True)
    out = {}
    for key in ("loss", "logits_per_image", "logits_per_text", "segmentation_logits", "text_embeds", "image_embeds"):
        out[key] = to_numpy(o[key])
    for tower in ("text_model_output", "vision_model_output"):
        for field in ("last_hidden_state", "pooler_output", "hidden_states", "attentions"):
            flatten(f"{tower}.{field}", getattr(o[tower], field), out)
    out["text_features"] = to_numpy(model.get_text_features(inputs["input_ids"], inputs["attention_mask"]))
    out["image_features"] = to_numpy(model.get_image_features(inputs["pixel_values"]))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_hf_on_every_output(name, backend):
    xp, device = backend
    d, inputs, ref = load_fixture(name)
    ours = run_all(GroupViTModel.from_pretrained(d, dtype="float64", xp=xp, device=device), inputs)
    assert sorted(ours) == sorted(ref)  # every HF output is produced, nothing more
    for key, expected in ref.items():
        assert_matches_hf64(ours[key], expected, key)


@pytest.mark.parametrize("name", NAMES)
def test_strict_backend_equals_numpy(name):
    xs = pytest.importorskip("array_api_strict")
    import array_api_compat.numpy as xnp

    d, inputs, _ = load_fixture(name)
    a = run_all(GroupViTModel.from_pretrained(d, dtype="float64", xp=xnp), inputs)
    b = run_all(GroupViTModel.from_pretrained(d, dtype="float64", xp=xs, device=xs.Device("device1")), inputs)
    for key in a:
        # The same operations on the same host BLAS: any difference would be a different code path.
        assert_close(b[key], a[key], atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_float32_is_relatively_close(name):
    d, inputs, ref = load_fixture(name)
    ours = run_all(GroupViTModel.from_pretrained(d, dtype="float32"), inputs)
    for key in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds", "text_features",
                "image_features"):  # fmt: skip
        assert ours[key].dtype == np.float32
        # float32 rounding (eps 6e-8) accumulated over ~20 layers and amplified by exp(logit_scale) = 18.
        scale = np.abs(ref[key]).max()
        assert np.abs(ours[key] - ref[key]).max() / scale < 1e-4, key


@pytest.mark.parametrize("name", NAMES)
def test_gumbel_training_assignment_matches_hf(name, backend):
    xp, device = backend
    d, _, _ = load_fixture(name)
    inputs = dict(np.load(d / "inputs.npz"))
    ref = dict(np.load(d / "gumbel.npz"))
    model = GroupViTVisionModel.from_pretrained(d, dtype="float64", xp=xp, device=device)
    noise = [xp.asarray(ref[k], device=device) if device else xp.asarray(ref[k]) for k in sorted(ref) if "noise" in k]
    o = model(inputs["pixel_values"][:2], output_hidden_states=True, gumbel_noise=noise)
    # Same noise, same argmax: the train-mode outputs agree to float64 rounding, stage by stage.
    assert_matches_hf64(o.last_hidden_state, ref["last_hidden_state"], "last_hidden_state")
    assert_matches_hf64(o.pooler_output, ref["pooler_output"], "pooler_output")
    stored = sorted(k for k in ref if k.startswith("hidden_states."))
    assert stored == [f"hidden_states.{i}" for i in range(len(o.hidden_states))] and len(stored) == 4
    for i, h in enumerate(o.hidden_states):  # embeddings, then after each of the three stages
        assert_matches_hf64(h, ref[f"hidden_states.{i}"], f"hidden_states.{i}")
    eval_out = model(inputs["pixel_values"][:2])
    assert np.abs(to_numpy(eval_out.last_hidden_state) - ref["last_hidden_state"]).max() > 1e-3  # noise mattered


def test_fixture_metadata_is_recorded():
    for name in NAMES:
        meta = json.loads((FIXTURES / f"model_{name}" / "meta.json").read_text())
        assert meta["min_assignment_gap"] > 1e-9  # far above float64 noise, so no hard-assignment flips


def test_return_dict_false_gives_hf_tuple_order():
    d, inputs, ref = load_fixture("hf_tiny")
    model = GroupViTModel.from_pretrained(d, dtype="float64")
    t = model(**inputs, return_loss=True, output_segmentation=True, return_dict=False)
    # (loss, logits_per_image, logits_per_text, segmentation_logits, text_embeds, image_embeds, text, vision)
    assert len(t) == 8
    for i, key in enumerate(["loss", "logits_per_image", "logits_per_text", "segmentation_logits", "text_embeds",
                             "image_embeds"]):  # fmt: skip
        assert_matches_hf64(t[i], ref[key], key)
    text_tuple, vision_tuple = t[6], t[7]
    assert_matches_hf64(text_tuple[0], ref["text_model_output.last_hidden_state"], "text last_hidden_state")
    assert_matches_hf64(text_tuple[1], ref["text_model_output.pooler_output"], "text pooler_output")
    assert len(vision_tuple) == 3  # last_hidden_state, pooler_output, attentions (segmentation forces them)
    t2 = model(**inputs, return_dict=False)
    assert len(t2) == 6  # no loss, no segmentation


def test_tower_models_load_from_full_checkpoint():
    d, inputs, ref = load_fixture("small_legacy")
    text = GroupViTTextModel.from_pretrained(d, dtype="float64")
    vision = GroupViTVisionModel.from_pretrained(d, dtype="float64")
    t = text(inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
    v = vision(inputs["pixel_values"], output_attentions=True)
    assert_matches_hf64(t.pooler_output, ref["text_model_output.pooler_output"], "text pooler_output")
    assert_matches_hf64(t.hidden_states[2], ref["text_model_output.hidden_states.2"], "text hidden_states.2")
    assert_matches_hf64(v.last_hidden_state, ref["vision_model_output.last_hidden_state"], "vision last_hidden_state")
    assert_matches_hf64(v.attentions[1], ref["vision_model_output.attentions.1"], "vision attentions.1")


def test_legacy_and_modern_pooling_differ_where_they_should():
    d, inputs, _ = load_fixture("small_legacy")
    model = GroupViTTextModel.from_pretrained(d, dtype="float64")
    assert model.config.eos_token_id == 2  # legacy config: pool at argmax(input_ids)
    ids = inputs["input_ids"]
    out = model(ids, attention_mask=inputs["attention_mask"])
    idx = ids.argmax(-1)
    np.testing.assert_array_equal(out.pooler_output, out.last_hidden_state[np.arange(len(ids)), idx])


# Texts on which the two rules disagree: an EOS id (40) that is not the largest id, text after the first EOS, no EOS.
MODERN_EOS = 40
MODERN_IDS = np.array([
    [97, 12, 40, 60, 5, 40, 70, 98, 98],  # first EOS at 2; argmax (97, the BOS) at 0
    [97, 81, 3, 96, 7, 40, 98, 98, 98],  # first EOS at 5; argmax at 0
    [3, 50, 60, 70, 80, 90, 96, 40, 40],  # no BOS: first EOS at 7; argmax (96) at 6
    [97, 12, 13, 14, 15, 16, 17, 18, 19],  # no EOS at all: HF's rule gives position 0
])  # fmt: skip


def modern_checkpoint(folder, eos=MODERN_EOS):
    """The hf_tiny checkpoint with its text eos_token_id moved to `eos` (not 2: the modern, first-EOS rule)."""
    folder.mkdir(exist_ok=True)
    config = json.loads((FIXTURES / "model_hf_tiny" / "config.json").read_text())
    config["text_config"]["eos_token_id"] = eos
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((FIXTURES / "model_hf_tiny" / "model.safetensors").read_bytes())
    return folder


def test_modern_pooling_takes_the_first_eos_where_argmax_would_not(tmp_path):
    model = GroupViTTextModel.from_pretrained(modern_checkpoint(tmp_path / "modern"), dtype="float64")
    assert model.config.eos_token_id == MODERN_EOS
    out = model(MODERN_IDS)
    first_eos = [row.index(MODERN_EOS) if MODERN_EOS in row else 0 for row in MODERN_IDS.tolist()]
    assert first_eos == [2, 5, 7, 0]
    rows = np.arange(len(MODERN_IDS))
    np.testing.assert_array_equal(out.pooler_output, out.last_hidden_state[rows, first_eos])
    argmax_rows = out.last_hidden_state[rows, MODERN_IDS.argmax(-1)]
    for i in range(3):  # the legacy rule would pool elsewhere, and that would change the output
        assert np.abs(argmax_rows[i] - out.pooler_output[i]).max() > 1e-2, i


# ---------------------------------------------------------------------------------------------------------------
# Bad input: clear ValueErrors.


@pytest.fixture(scope="module")
def tiny():
    d, inputs, _ = load_fixture("hf_tiny")
    return GroupViTModel.from_pretrained(d, dtype="float64"), inputs


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: {**i, "pixel_values": i["pixel_values"][:, :, :28, :28]}, "doesn't match model"),
        (lambda i: {**i, "pixel_values": i["pixel_values"][:, :2]}, r"shape \[B, 3, H, W\]"),
        (lambda i: {**i, "pixel_values": i["pixel_values"][0]}, r"shape \[B, 3, H, W\]"),
        (lambda i: {**i, "input_ids": np.ones((1, 513), np.int64), "attention_mask": None}, "max_position_embeddings"),
        (lambda i: {**i, "input_ids": i["input_ids"] + 99}, r"must lie in \[0, 99\)"),
        (lambda i: {**i, "input_ids": i["input_ids"].astype(float)}, "integer array"),
        (lambda i: {**i, "attention_mask": i["attention_mask"][:, :3]}, "attention_mask has shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny, change, message):
    model, inputs = tiny
    with pytest.raises(ValueError, match=message):
        model(**change(inputs))


def test_loss_needs_as_many_texts_as_images(tiny):
    model, inputs = tiny
    with pytest.raises(ValueError, match="pairs text i with image i"):
        model(**{**inputs, "pixel_values": inputs["pixel_values"][:2]}, return_loss=True)


def test_nested_lists_of_ids_are_accepted(tiny):
    model, inputs = tiny
    a = model.get_text_features(inputs["input_ids"].tolist())
    b = model.get_text_features(inputs["input_ids"])
    np.testing.assert_array_equal(a, b)


def test_text_features_ignore_padding_to_77(tiny):
    model, inputs = tiny
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    pad = np.full((ids.shape[0], 77 - ids.shape[1]), 98)
    long_ids, long_mask = np.concatenate([ids, pad], 1), np.concatenate([mask, np.zeros_like(pad)], 1)
    # get_text_features stops at the last EOS; causality makes that exact up to summation order.
    assert_close(model.get_text_features(long_ids, long_mask), model.get_text_features(ids, mask), atol=1e-12)


def test_half_storage_gives_bitwise_the_same_float32_outputs():
    d, inputs, _ = load_fixture("hf_tiny")  # the fixture's weights are float16 on disk
    wide = GroupViTModel.from_pretrained(d, dtype="float32")
    half = GroupViTModel.from_pretrained(d, dtype="float32", storage_dtype="float16")
    assert half.params["visual_projection"][0]["weight"].dtype == np.float16
    assert half.params["visual_projection"][0]["bias"].dtype == np.float32  # vectors take the compute dtype
    kwargs = dict(output_segmentation=True, interpolate_pos_encoding=True, return_loss=True)
    a, b = wide(**inputs, **kwargs), half(**inputs, **kwargs)
    for key in ("loss", "logits_per_image", "segmentation_logits", "text_embeds", "image_embeds"):
        # Products promote a float16 matrix to float32 exactly, so nothing changes.
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_half_storage_needs_a_namespace_with_float16():
    xs = pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="needs a namespace with float16"):
        GroupViTModel.from_pretrained(FIXTURES / "model_hf_tiny", storage_dtype="float16", xp=xs)
