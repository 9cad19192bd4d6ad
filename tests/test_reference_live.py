"""Live parity with transformers (needs torch + transformers; CI installs them, elsewhere these skip)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="live parity needs torch: pip install -e '.[reference]'")
pytest.importorskip("transformers", reason="live parity needs transformers: pip install -e '.[reference]'")

import reference_model as ref  # noqa: E402
from test_model import run_all  # noqa: E402

from groupvit_np import GroupViTModel  # noqa: E402

pytestmark = pytest.mark.reference


def _ours(hf_model, tmp_path, dtype):
    ref.save_checkpoint(hf_model, tmp_path, torch.float32)  # fp16-grid values: exact in float32
    return GroupViTModel.from_pretrained(tmp_path, dtype=dtype)


@pytest.mark.slow
def test_full_size_float64_every_output(tmp_path):
    torch.set_num_threads(2)
    hf = ref.build_model("full", seed=0)
    inputs = ref.make_inputs("full", seed=0, n_images=2, n_texts=2)
    expected = ref.run_reference(hf, inputs)
    got = run_all(_ours(hf, tmp_path, "float64"), inputs)
    assert sorted(got) == sorted(expected)
    worst = max(float(np.abs(got[k] - expected[k]).max()) for k in expected)
    print(f"full-size float64 max abs difference over {len(expected)} outputs: {worst:.3g}")
    for key in expected:
        # float64 throughout; 12-layer towers and s^2 = 330 in segmentation keep rounding far below 1e-10.
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-10, err_msg=key)


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
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-10, err_msg=key)


def test_gumbel_train_mode_with_fresh_noise():
    hf = ref.build_model("small_legacy", 7)
    inputs = ref.make_inputs("small_legacy", 7)
    expected = ref.run_gumbel_reference(hf, inputs["pixel_values"], seed=7)
    from groupvit_np.vision import vision_tower
    from groupvit_np.weights import nest

    params = nest({k: v.detach().numpy() for k, v in hf.state_dict().items()})
    noise = [expected[k] for k in sorted(expected) if k.startswith("gumbel_noise")]
    out = vision_tower(inputs["pixel_values"], params["vision_model"], ref_config(hf), noise)
    np.testing.assert_allclose(out["last_hidden_state"], expected["last_hidden_state"], atol=1e-10)


def ref_config(hf):
    from groupvit_np.config import GroupViTVisionConfig

    return GroupViTVisionConfig.from_dict(hf.config.vision_config.to_dict())
