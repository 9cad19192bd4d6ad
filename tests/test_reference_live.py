"""Live parity with transformers (needs torch + transformers; CI installs them, elsewhere these skip)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="live parity needs torch: pip install -e '.[reference]'")
pytest.importorskip("transformers", reason="live parity needs transformers: pip install -e '.[reference]'")

import reference_model as ref  # noqa: E402
from conftest import jax_x64  # noqa: E402
from parity import assert_matches_hf64  # noqa: E402
from test_model import MODERN_EOS, MODERN_IDS, modern_checkpoint, run_all  # noqa: E402

from groupvit_np import GroupViTModel  # noqa: E402

pytestmark = pytest.mark.reference


def _ours(hf_model, tmp_path, dtype):
    ref.save_checkpoint(hf_model, tmp_path, torch.float32)  # fp16-grid values: exact in float32
    return GroupViTModel.from_pretrained(tmp_path, dtype=dtype)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The full-size model (perturbed weights) saved once, its inputs, and HF's float64 outputs on them."""
    torch.set_num_threads(2)
    hf = ref.build_model("full", seed=0)
    inputs = ref.make_inputs("full", seed=0, n_images=2, n_texts=2)
    folder = tmp_path_factory.mktemp("full")
    ref.save_checkpoint(hf, folder, torch.float32)  # fp16-grid values: exact in float32
    return folder, inputs, ref.run_reference(hf, inputs)


@pytest.mark.slow
@pytest.mark.parametrize("xp", ["numpy", "jax", "torch"])
def test_full_size_float64_every_output(full_size, xp):
    if xp == "jax":
        jax_x64()  # the same code under jax.jit, one compilation per call shape
    folder, inputs, expected = full_size
    got = run_all(GroupViTModel.from_pretrained(folder, dtype="float64", xp=xp), inputs)
    assert sorted(got) == sorted(expected)
    worst = max(float(np.abs(got[k] - expected[k]).max()) for k in expected)
    print(f"full-size float64 on {xp}: max abs difference over {len(expected)} outputs: {worst:.3g}")
    for key in expected:
        # float64 throughout; 12-layer towers and s^2 = 330 in segmentation keep rounding far below the bound.
        assert_matches_hf64(got[key], expected[key], key)


@pytest.mark.slow
def test_full_size_float32_relative(tmp_path):
    torch.set_num_threads(2)
    hf = ref.build_model("full", seed=1)
    inputs = ref.make_inputs("full", seed=1, n_images=2, n_texts=3)
    model = _ours(hf, tmp_path, "float32")
    hf32 = hf.float()
    with torch.no_grad():
        o = hf32(
            input_ids=torch.from_numpy(inputs["input_ids"]),
            pixel_values=torch.from_numpy(inputs["pixel_values"]).float(),
            attention_mask=torch.from_numpy(inputs["attention_mask"]),
        )
    mine = model(**inputs)
    for key in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        a, b = np.asarray(mine[key]), o[key].numpy()
        # Two float32 implementations with different summation orders: ~1e-6 relative seen, 1e-4 is the bound.
        assert np.abs(a - b).max() / np.abs(b).max() < 1e-4, key


@pytest.mark.parametrize("name", ["hf_tiny", "small_legacy"])
@pytest.mark.parametrize("seed", [101, 202])
def test_small_configs_with_fresh_seeds(name, seed, tmp_path):
    hf = ref.build_model(name, seed)
    inputs = ref.make_inputs(name, seed)
    expected = ref.run_reference(hf, inputs)
    got = run_all(_ours(hf, tmp_path, "float64"), inputs)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert_matches_hf64(got[key], expected[key], key)


def test_gumbel_train_mode_with_fresh_noise():
    hf = ref.build_model("small_legacy", 7)
    inputs = ref.make_inputs("small_legacy", 7)
    expected = ref.run_gumbel_reference(hf, inputs["pixel_values"], seed=7)
    from groupvit_np.checkpoints.weights import nest
    from groupvit_np.nn.vision import vision_tower

    params = nest({k: v.detach().numpy() for k, v in hf.state_dict().items()})
    noise = [expected[k] for k in sorted(expected) if k.startswith("gumbel_noise")]
    out = vision_tower(inputs["pixel_values"], params["vision_model"], ref_config(hf), noise)
    assert_matches_hf64(out["last_hidden_state"], expected["last_hidden_state"], "last_hidden_state")
    assert_matches_hf64(out["pooler_output"], expected["pooler_output"], "pooler_output")
    for i, h in enumerate(out["hidden_states"]):
        assert_matches_hf64(h, expected[f"hidden_states.{i}"], f"hidden_states.{i}")


def ref_config(hf):
    from groupvit_np.config import GroupViTVisionConfig

    return GroupViTVisionConfig.from_dict(hf.config.vision_config.to_dict())


@pytest.mark.parametrize("tower", ["text", "vision"])
def test_tower_checkpoints_saved_by_transformers_load_into_the_tower_models(tower, tmp_path):
    from transformers import GroupViTTextModel as HFText
    from transformers import GroupViTVisionModel as HFVision

    from groupvit_np import GroupViTTextModel, GroupViTVisionModel
    from groupvit_np.errors import CheckpointError

    full = ref.build_model("hf_tiny", 5)
    inputs = ref.make_inputs("hf_tiny", 5)
    hf_cls, ours_cls = (HFText, GroupViTTextModel) if tower == "text" else (HFVision, GroupViTVisionModel)
    hf = hf_cls(getattr(full.config, f"{tower}_config"))
    getattr(hf, f"{tower}_model").load_state_dict(getattr(full, f"{tower}_model").state_dict())
    hf.to(torch.float32).save_pretrained(tmp_path, safe_serialization=True)  # model_type groupvit_<tower>_model
    ours = ours_cls.from_pretrained(tmp_path, dtype="float64")
    torch.set_default_dtype(torch.float64)  # HF's text mask cannot be built in float64 otherwise (spec 13)
    try:
        hf.double().eval()
        with torch.no_grad():
            if tower == "text":
                ids, mask = inputs["input_ids"], inputs["attention_mask"]
                expected = hf(torch.from_numpy(ids), torch.from_numpy(mask)).pooler_output.numpy()
                got = ours(ids, mask).pooler_output
            else:
                expected = hf(torch.from_numpy(inputs["pixel_values"])).pooler_output.numpy()
                got = ours(inputs["pixel_values"]).pooler_output
    finally:
        torch.set_default_dtype(torch.float32)
    assert_matches_hf64(got, expected, f"{tower} pooler_output")  # fp16-grid weights, float64 both
    with pytest.raises(CheckpointError, match=f"only the {tower} tower"):
        GroupViTModel.from_pretrained(tmp_path)


def test_modern_first_eos_pooling_where_argmax_differs(tmp_path):
    """HF pools at the first `eos_token_id` unless it is 2; ids where that is not the largest id tell them apart."""
    from transformers import GroupViTTextModel as HFText

    from groupvit_np import GroupViTTextModel

    folder = modern_checkpoint(tmp_path / "modern")
    hf = HFText.from_pretrained(folder, dtype=torch.float64).eval()
    assert hf.config.eos_token_id == MODERN_EOS
    torch.set_default_dtype(torch.float64)  # HF's text mask cannot be built in float64 otherwise (spec 13)
    try:
        with torch.no_grad():
            o = hf(torch.from_numpy(MODERN_IDS))
    finally:
        torch.set_default_dtype(torch.float32)
    expected = o.pooler_output.numpy()
    argmax_rule = o.last_hidden_state.numpy()[np.arange(len(MODERN_IDS)), MODERN_IDS.argmax(-1)]
    got = GroupViTTextModel.from_pretrained(folder, dtype="float64")(MODERN_IDS).pooler_output
    assert_matches_hf64(got, expected, "pooler_output")
    assert np.abs(argmax_rule[:3] - expected[:3]).max(axis=-1).min() > 1e-2  # the rows where the rules differ
