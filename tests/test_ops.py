"""Each named hard part against a closed form or a law it must obey."""

from __future__ import annotations

import math

import array_api_compat.numpy as xp
import numpy as np
import pytest
from parity import assert_close

from groupvit_np.checkpoints.weights import nest
from groupvit_np.nn.attention import fuse_projections, multi_head_attention, project_heads, text_attention_mask
from groupvit_np.nn.grouping import assign_attention, gumbel_softmax, hard_softmax, one_hot_argmax
from groupvit_np.nn.heads import contrastive_loss, token_grid
from groupvit_np.nn.ops import (
    batch_norm_eval,
    gelu,
    l2_normalize,
    layer_norm,
    linear,
    mixer_mlp,
    mlp,
    quick_gelu,
    softmax,
)
from groupvit_np.nn.special import erf
from groupvit_np.nn.vision import patch_embed

rng = np.random.default_rng(0)


def lin(d_in, d_out):
    return {"weight": rng.normal(size=(d_out, d_in)), "bias": rng.normal(size=d_out)}


def test_erf_is_accurate_to_float64_rounding():
    x = np.concatenate(
        [np.linspace(-7, 7, 200_001), np.geomspace(1e-300, 1e-2, 500), [0.0, 0.84375, 1.25, 1 / 0.35, 6]]
    )
    ref = np.array([math.erf(v) for v in x])
    rel = np.abs(erf(x) - ref) / np.maximum(np.abs(ref), 1e-300)
    assert rel.max() <= 1e-15  # the bound; fdlibm's pieces reach 2.2e-16 here
    assert erf(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]
    np.testing.assert_array_equal(erf(-x), -erf(x))  # odd by construction


def test_erf_float32_stays_float32():
    x = np.linspace(-5, 5, 1001, dtype=np.float32)
    y = erf(x)
    assert y.dtype == np.float32
    # Eigen's float32 rational erf: 2.3 units of 2^-23 at worst here (x = -3.97), within the 3-unit bound of the
    # GELU test below. (This check once read atol=2e-7 and passed only through NumPy's hidden rtol=1e-7.)
    assert_close(y, [math.erf(v) for v in x.astype(float)], atol=3 * 2.0**-23)


def test_gelu_and_quick_gelu_closed_forms():
    x = np.linspace(-6, 6, 121)
    # For x < 0, 1 + erf(x/sqrt2) cancels: an ulp of erf (1e-16) becomes a large *relative* error of a tiny value.
    # torch computes the same form, so the absolute bound is the meaningful one.
    assert_close(gelu(x), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x], atol=1e-15)
    np.testing.assert_allclose(quick_gelu(x), x / (1 + np.exp(-1.702 * x)), rtol=1e-15)


def test_float32_gelu_is_within_float32_rounding_of_the_exact_one():
    # 2^20 points: more than two 2^17-element blocks, so the cache-blocked path runs (and its block seams).
    x = np.linspace(-9, 9, 1 << 20, dtype=np.float32)
    y = gelu(x)
    assert y.dtype == np.float32
    exact = gelu(x.astype(np.float64))  # the float64 path, itself within 1e-15 of math.erf
    # Eigen's rational erf reaches 2.4 float32 ulps of max(|x|, 1) here, with or without 1/sqrt2 and 1/2 folded
    # into its coefficients (2.37 folded, 2.43 not; torch's float32 GELU: 1.36).
    err = np.abs(y - exact) / np.maximum(np.abs(x.astype(np.float64)), 1.0)
    assert err.max() <= 3 * 2.0**-23
    assert np.all(y[x < -6] <= 0) and np.all(y[x > 6] == x[x > 6])  # saturated tails: GELU -> 0 and -> x
    np.testing.assert_array_equal(gelu(x[:1000]), y[:1000])  # blocked and unblocked agree bit for bit


@pytest.mark.parametrize("size", [100, 3 << 17])  # one pass, and the blocked path
def test_overwrite_reuses_the_input_and_otherwise_leaves_it_alone(size):
    x = rng.normal(size=(size // 4, 4)).astype(np.float32)
    keep = x.copy()
    for fn in (gelu, quick_gelu):
        y = fn(x)
        np.testing.assert_array_equal(x, keep)  # the default never writes into the caller's array
        z = fn(x.copy(), overwrite=True)
        np.testing.assert_array_equal(z, y)
    s = softmax(x.copy(), axis=0, overwrite=True)
    np.testing.assert_array_equal(s, softmax(x, axis=0))
    np.testing.assert_array_equal(x, keep)


def test_fused_projections_match_the_separate_ones_and_never_go_stale():
    d, heads = 12, 3
    p = {name: lin(d, d) for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
    q_in, kv_in = rng.normal(size=(2, 4, d)), rng.normal(size=(2, 6, d))
    separate = {k: dict(v) for k, v in p.items()}
    source = {k: dict(v) for k, v in p.items()}
    fused = fuse_projections(source)
    assert fused["in_proj"]["weight"].shape == (3 * d, d)
    assert "in_proj" not in source and source["k_proj"]["weight"] is p["k_proj"]["weight"]  # input untouched
    for x_q, x_kv in ((q_in, q_in), (q_in, kv_in)):  # self-attention (q, k, v at once) and cross (k, v at once)
        a, wa = multi_head_attention(x_q, x_kv, separate, heads)
        b, wb = multi_head_attention(x_q, x_kv, fused, heads)
        assert_close(b, a, atol=1e-13)  # one stacked product vs three: summation order only
        assert_close(wb, wa, atol=1e-15)
    assert np.shares_memory(fused["k_proj"]["weight"], fused["in_proj"]["weight"])  # views, not a second copy
    fused["k_proj"]["weight"][...] = 0.0  # an in-place edit of an HF leaf reaches the stacked weights
    k = project_heads(q_in, q_in, fused, heads)[1]
    per_head = fused["k_proj"]["bias"].reshape(1, heads, 1, d // heads)  # k is the bias alone, in every position
    np.testing.assert_array_equal(k, np.broadcast_to(per_head, (2, heads, 4, d // heads)).reshape(2 * heads, 4, -1))
    fused["v_proj"] = lin(d, d)  # a replaced leaf: the stale stacked weights must not be used
    separate["k_proj"] = {"weight": np.zeros((d, d)), "bias": fused["k_proj"]["bias"]}
    separate["v_proj"] = fused["v_proj"]
    assert_close(
        multi_head_attention(q_in, kv_in, fused, heads)[0],
        multi_head_attention(q_in, kv_in, separate, heads)[0],
        atol=1e-13,
    )


def test_half_precision_weights_give_bitwise_the_float32_product():
    # Shapes where OpenBLAS's kernels for W^T as a transposed view and as a (Din, Dout) copy round differently
    # (1e-5 apart here with NumPy 2.4's OpenBLAS), so a product that let NumPy widen the transposed float16 view
    # would not be bitwise equal: both checks failed before `linear` and `patch_embed` widened W first.
    x = rng.normal(size=(3, 64, 128)).astype(np.float32)
    p16 = {"weight": rng.normal(size=(37, 128)).astype(np.float16), "bias": rng.normal(size=37).astype(np.float32)}
    p32 = {**p16, "weight": p16["weight"].astype(np.float32)}
    np.testing.assert_array_equal(linear(x, p16), linear(x, p32))
    conv16 = {"weight": rng.normal(size=(37, 3, 8, 8)).astype(np.float16), "bias": p16["bias"]}
    pixels = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(
        patch_embed(pixels, conv16, 8),
        patch_embed(pixels, {**conv16, "weight": conv16["weight"].astype(np.float32)}, 8),
    )


def test_softmax_sums_to_one_and_survives_huge_negatives():
    x = rng.normal(size=(4, 7)) * 50
    x[:, 3] = np.finfo(np.float64).min
    s = softmax(x)
    assert_close(s.sum(-1), 1, atol=1e-15)
    assert np.all(s[:, 3] == 0)


def test_layer_norm_has_zero_mean_unit_variance_before_affine():
    x = rng.normal(size=(3, 5, 16)) * 4 + 2
    y = layer_norm(x, {"weight": np.ones(16), "bias": np.zeros(16)})
    assert_close(y.mean(-1), 0, atol=1e-14)
    np.testing.assert_allclose(y.var(-1), 1 - 1e-5 / (x.var(-1) + 1e-5), rtol=1e-12)  # eps sits under the sqrt


def test_batch_norm_eval_uses_running_statistics():
    p = {"weight": rng.normal(size=6), "bias": rng.normal(size=6), "running_mean": rng.normal(size=6),
         "running_var": rng.uniform(0.5, 2, size=6)}  # fmt: skip
    x = rng.normal(size=(1, 6))  # one row: batch statistics would be degenerate; running ones are not
    expected = (x - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]
    np.testing.assert_allclose(batch_norm_eval(x, p), expected, rtol=1e-15)


def test_mixer_mlp_is_the_mlp_on_the_transposed_tokens():
    p = {"fc1": lin(5, 7), "fc2": lin(7, 3)}
    x = rng.normal(size=(2, 5, 4))  # [B, G=5, D=4] -> [B, S=3, D]
    y = mixer_mlp(x, p)
    assert y.shape == (2, 3, 4)
    np.testing.assert_allclose(y, np.swapaxes(mlp(np.swapaxes(x, 1, 2), p), 1, 2), rtol=1e-15)


def test_hard_softmax_is_one_hot_with_first_index_on_ties():
    logits = np.array([[[1.0, 0.0], [1.0, 3.0], [0.5, 3.0]]])  # [B=1, S=3, N=2], ties broken to the first group
    np.testing.assert_array_equal(hard_softmax(logits, axis=-2), [[[1, 0], [0, 1], [0, 0]]])
    tie = np.zeros((1, 4, 3))
    np.testing.assert_array_equal(one_hot_argmax(tie)[0, 0], [1, 1, 1])


def test_gumbel_with_zero_noise_is_the_eval_assignment_and_noise_can_flip_it():
    logits = rng.normal(size=(2, 4, 9))
    np.testing.assert_array_equal(gumbel_softmax(logits, np.zeros_like(logits)), hard_softmax(logits))
    noise = np.zeros_like(logits)
    noise[0, 3, 0] = 100.0  # a huge Gumbel draw for group 3 wins token 0
    assert gumbel_softmax(logits, noise)[0, 3, 0] == 1.0
    with pytest.raises(ValueError, match="noise has shape"):
        gumbel_softmax(logits, noise[:, :2])


def test_assign_attention_counts_plus_one_and_empty_groups_output_the_bias():
    d = 8
    p = {name: lin(d, d) for name in ("q_proj", "k_proj", "v_proj", "proj")}
    groups, tokens = rng.normal(size=(1, 3, d)), rng.normal(size=(1, 5, d))
    out, soft = assign_attention(groups, tokens, p)
    assert_close(soft.sum(axis=-2), 1, atol=1e-15)  # each token distributes over groups
    hard = one_hot_argmax(soft)[0]  # [S, N]
    v = tokens[0] @ p["v_proj"]["weight"].T + p["v_proj"]["bias"]
    for g in range(3):
        mean = hard[g] @ v / (hard[g].sum() + 1.0)  # the count + 1 average, written out
        assert_close(out[0, g], mean @ p["proj"]["weight"].T + p["proj"]["bias"], atol=1e-13)
    empty = [g for g in range(3) if hard[g].sum() == 0]
    for g in empty:
        assert_close(out[0, g], p["proj"]["bias"], atol=1e-15)


def test_text_mask_blocks_the_future_and_pads():
    like = np.zeros((1,), np.float64)
    m = text_attention_mask(3, np.array([[1, 1, 0]]), like)[0, 0]
    low = np.finfo(np.float64).min
    assert m[0].tolist() == [0, low, -np.inf]  # key 2 is both in the future and a pad: HF's min + min
    assert m[2].tolist() == [0, 0, low]


def test_attention_is_equivariant_to_key_permutation():
    d, heads = 12, 3
    p = {name: lin(d, d) for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
    q, kv = rng.normal(size=(2, 4, d)), rng.normal(size=(2, 6, d))
    perm = rng.permutation(6)
    a, wa = multi_head_attention(q, kv, p, heads)
    b, wb = multi_head_attention(q, kv[:, perm], p, heads)
    assert_close(a, b, atol=1e-13)
    assert_close(wa[..., perm], wb, atol=1e-15)
    assert wa.shape == (2, 3, 4, 6)


def test_contrastive_loss_closed_form_and_minimum():
    logits = rng.normal(size=(4, 4))
    ce_rows = np.mean([np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(logits)])
    ce_cols = np.mean([np.log(np.exp(c).sum()) - c[i] for i, c in enumerate(logits.T)])
    np.testing.assert_allclose(contrastive_loss(logits), (ce_rows + ce_cols) / 2, rtol=1e-14)
    assert float(contrastive_loss(np.eye(3) * 1000)) == 0.0
    with pytest.raises(ValueError, match="as many texts as images"):
        contrastive_loss(logits[:3])


def test_l2_normalize_and_token_grid():
    x = rng.normal(size=(3, 5))
    assert_close(np.linalg.norm(l2_normalize(x), axis=-1), 1, atol=1e-15)
    assert token_grid(196, 224, 224) == (14, 14)
    assert token_grid(28 * 42, 448, 672) == (28, 42)
    assert token_grid(42 * 28, 672, 448) == (42, 28)


def test_nest_builds_lists_from_numbered_children():
    tree = nest({"a.0.w": 1, "a.1.w": 2, "h.0.b": 3, "h.3.b": 4, "s": 5})
    assert tree == {"a": [{"w": 1}, {"w": 2}], "h": [{"b": 3}, None, None, {"b": 4}], "s": 5}


def test_ops_stay_in_the_namespace_of_their_inputs():
    xs = pytest.importorskip("array_api_strict")
    x = xs.asarray(rng.normal(size=(2, 3)), device=xs.Device("device1"))
    for y in (erf(x), gelu(x), softmax(x), l2_normalize(x)):
        assert y.device == xs.Device("device1")
    assert isinstance(erf(xp.asarray(np.ones(2))), np.ndarray)
