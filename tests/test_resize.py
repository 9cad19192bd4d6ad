"""Bilinear and bicubic resampling matrices, and the position table at other resolutions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES
from parity import assert_close

from groupvit_np import GroupViTModel
from groupvit_np.backend import to_numpy
from groupvit_np.nn.resize import bicubic_matrix, bilinear_matrix, resize_grid, resize_position_table

like = np.zeros(1)


def test_bilinear_closed_form_example():
    np.testing.assert_array_equal(bilinear_matrix(4, 2, like), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])  # exact


def test_bicubic_rows_sum_to_one_and_identity_at_same_size():
    for out, n in [(28, 14), (5, 14), (9, 4), (14, 14)]:
        m = bicubic_matrix(out, n, like)
        # The Keys kernel is a partition of unity; four float64 weights summed land within a few ulps of 1 (1.1e-15
        # seen; this check once read atol=1e-15 and passed only through NumPy's hidden rtol=1e-7).
        assert_close(m.sum(-1), 1, atol=4e-15)
    np.testing.assert_array_equal(bicubic_matrix(6, 6, like), np.eye(6))


def test_bicubic_upsampling_by_two_matches_keys_weights():
    # Output 1 of 2x upsampling sits at source 0.25: taps -1..2 with A=-0.75 weights, tap -1 clamped onto 0.
    t, a = 0.25, -0.75
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731
    row = bicubic_matrix(8, 4, like)[1]
    assert_close(row, [far(1 + t) + near(t), near(1 - t), far(2 - t), 0], atol=1e-15)


def test_position_table_unchanged_at_native_grid():
    table = np.random.default_rng(0).normal(size=(1, 16, 5))
    assert resize_position_table(table, 4, 4) is table
    assert resize_position_table(table, 6, 3).shape == (1, 18, 5)


@pytest.mark.reference
@pytest.mark.parametrize("size", [(28, 28), (20, 33), (7, 5), (14, 14), (3, 50)])
def test_matches_torch_interpolate(size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(2, 3, 14, 14))
    for mode in ("bicubic", "bilinear"):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode=mode, align_corners=False)
        # Same taps and weights; only the summation order differs from torch's kernel.
        assert_close(resize_grid(x, *size, mode), ref.numpy(), atol=1e-13)


@pytest.mark.reference
@pytest.mark.parametrize("hw", [(48, 48), (32, 64), (64, 40), (30, 30)])
def test_embeddings_match_hf_interpolate_pos_encoding(hw):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from groupvit_np.nn.vision import vision_embeddings

    d = FIXTURES / "model_hf_tiny"
    hf = transformers.GroupViTModel.from_pretrained(d).double().eval()
    ours = GroupViTModel.from_pretrained(d, dtype="float64")
    pixels = np.random.default_rng(2).normal(size=(1, 3, *hw))
    with torch.no_grad():
        ref = hf.vision_model.embeddings(torch.from_numpy(pixels), interpolate_pos_encoding=True).numpy()
    got = vision_embeddings(pixels, ours.params["vision_model"]["embeddings"], ours.config.vision_config, True)
    assert_close(got, ref, atol=1e-12)  # float64, sums of a few hundred terms


def test_model_runs_at_other_resolutions_and_refuses_bad_sizes():
    model = GroupViTModel.from_pretrained(FIXTURES / "model_hf_tiny", dtype="float64")
    ids = np.array([[97, 5, 98]])
    pixels = np.random.default_rng(3).normal(size=(1, 3, 40, 24))
    o = model(input_ids=ids, pixel_values=pixels, output_segmentation=True, interpolate_pos_encoding=True)
    assert to_numpy(o.segmentation_logits).shape == (1, 1, 40, 24)
    assert o.vision_model_output.attentions[0].shape == (1, 64, 240)  # 20 x 12 patches of 2 px
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model(input_ids=ids, pixel_values=pixels[..., :23], interpolate_pos_encoding=True)
