"""The capability checks that pick backend paths, and what JAX (jit) and torch tensors run beyond the parity suite.

The parity suite itself (test_model.py, test_segmentation.py) runs on every backend through the `backend` fixture;
here: the capabilities asked of arrays, both paths of the paths they choose (on NumPy, a read-only array takes
the immutable one), the gradient stop of the straight-through one-hot, compilation per shape, float32 and
classification on JAX and torch, the CLI's `--backend jax`, and JAX without float64.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, jax_x64
from parity import assert_close
from PIL import Image

from groupvit_np import CLIPTokenizer, GroupViTModel
from groupvit_np._resources import data_dir
from groupvit_np.backend import (
    boolean_indexing,
    elementwise_chunk,
    in_host_memory,
    index_dtype,
    resolve_xp,
    slice_add,
    stop_gradient,
    to_numpy,
    writes_in_place,
)
from groupvit_np.nn.ops import gelu, layer_norm, softmax
from groupvit_np.nn.special import erf

rng = np.random.default_rng(0)


def read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------------------------------------------------------
# Capabilities, asked of arrays.


def test_numpy_capabilities():
    import array_api_compat.numpy as xnp

    a = np.zeros(3)
    assert writes_in_place(a) and in_host_memory(a) and boolean_indexing(xnp)
    assert not writes_in_place(read_only(a))  # a memory-mapped checkpoint tensor, say
    assert index_dtype(xnp) == np.int64
    assert elementwise_chunk(a) == 1 << 17 and elementwise_chunk(read_only(a)) is None


def test_jax_capabilities():
    jnp = jax_x64()
    a = jnp.zeros(3)
    assert not writes_in_place(a) and in_host_memory(a) and not boolean_indexing(jnp)
    assert elementwise_chunk(a) is None  # immutable: XLA fuses the chain instead
    assert resolve_xp("jax") is jnp


def test_strict_device_counts_as_host_memory():
    xs = pytest.importorskip("array_api_strict")
    a = xs.zeros(3, device=xs.Device("device1"))
    assert writes_in_place(a) and in_host_memory(a) and elementwise_chunk(a) == 1 << 17


def test_unknown_backend_name_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        resolve_xp("numba")


# ---------------------------------------------------------------------------------------------------------------
# Both paths of each capability-chosen path.


def test_erf_immutable_path_equals_the_masked_one_bit_for_bit():
    x = np.concatenate([rng.normal(size=5000) * 3, np.linspace(-7, 7, 2001), [0.0, -0.0, np.inf, -np.inf, np.nan],
                        [0.84375, 1.25, 1 / 0.35, 6.0], np.nextafter([0.84375, 1.25, 1 / 0.35, 6.0], 0)])  # fmt: skip
    masked = erf(x)
    where = erf(read_only(x))  # no writes: every piece on every element, picked with where
    np.testing.assert_array_equal(where, masked)  # the same operations per element: identical values
    assert np.array_equal(np.signbit(where), np.signbit(masked))  # erf(-0.0) = -0.0 on both


@pytest.mark.parametrize("fn", [gelu, lambda v: softmax(v), lambda v: layer_norm(v, {"weight": 1.5, "bias": 0.1})])
def test_row_blocks_and_whole_arrays_agree(fn):
    x = rng.normal(size=(3 << 15, 8))  # above 2 blocks: the blocked path
    np.testing.assert_array_equal(fn(read_only(x)), fn(x.copy()))  # row-wise ops: blocks change no rounding


def test_slice_add_in_place_and_on_immutable_arrays():
    base, part = rng.normal(size=(2, 5, 7)), rng.normal(size=(2, 3, 4))
    key = (slice(None), slice(1, 4), slice(2, 6))
    expected = base.copy()
    expected[key] += part
    a = base.copy()
    assert slice_add(a, key, part) is a  # written in place
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(slice_add(read_only(base), key, part), expected)  # padded and added
    jnp = jax_x64()
    np.testing.assert_array_equal(np.asarray(slice_add(jnp.asarray(base), key, jnp.asarray(part))), expected)


# ---------------------------------------------------------------------------------------------------------------
# Gradients: the stop in the straight-through one-hot.


def test_stop_gradient_is_identity_without_autodiff():
    a = np.ones(3)
    assert stop_gradient(a) is a


def test_straight_through_value_is_one_hot_and_gradient_is_the_softmaxs():
    jnp = jax_x64()
    import jax

    from groupvit_np.nn.grouping import hard_softmax, one_hot_argmax

    logits, w = jnp.asarray(rng.normal(size=(2, 5, 7))), jnp.asarray(rng.normal(size=(2, 5, 7)))
    value = hard_softmax(logits)
    assert_close(value, one_hot_argmax(logits), atol=1e-15)  # 1 - s + s rounds to within an ulp of 0 or 1
    got = jax.grad(lambda v: jnp.sum(w * hard_softmax(v)))(logits)
    want = jax.grad(lambda v: jnp.sum(w * softmax(v, axis=-2)))(logits)
    assert_close(got, want, atol=1e-15)  # the soft term's gradient, to rounding
    assert float(jnp.abs(got).max()) > 1e-3  # and not the zero that (hard - soft) + soft alone would give


def test_stop_gradient_detaches_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, requires_grad=True)
    stopped = stop_gradient(t)
    assert not stopped.requires_grad and stopped.data_ptr() == t.data_ptr()  # HF's .detach(): same memory


# ---------------------------------------------------------------------------------------------------------------
# JAX and torch models beyond the float64 parity suite.


def test_jax_compiles_once_per_shape_and_options():
    jax_x64()
    d = data_dir("weights") / "groupvit-tiny-random"  # one layer per stage: eager JAX stays quick
    pixels = rng.normal(size=(3, 3, 224, 224))
    model = GroupViTModel.from_pretrained(d, dtype="float64", xp="jax")
    a = model.get_image_features(pixels)
    b = model.get_image_features(pixels + 0.0)  # same shape: no new compilation
    (compiled,) = model._compiled.values()
    assert model.jit and compiled._cache_size() == 1
    model.get_image_features(pixels[:2])  # a new batch size compiles once more
    assert compiled._cache_size() == 2
    np.testing.assert_array_equal(a, b)
    eager = GroupViTModel.from_pretrained(d, dtype="float64", xp="jax", jit=False)
    assert not eager.jit
    # XLA fuses and reorders elementwise chains: compiled and eager agree to float64 rounding
    assert_close(eager.get_image_features(pixels), a, atol=1e-12)
    with pytest.raises(ValueError, match="needs a namespace with a compiler"):
        GroupViTModel.from_pretrained(d, jit=True)


@pytest.mark.parametrize("xp", ["jax", "torch"])
def test_float32_is_relatively_close_on_jax_and_torch(xp):
    if xp == "jax":
        jax_x64()
    else:
        pytest.importorskip("torch")
    d = FIXTURES / "model_small_legacy"
    inputs, ref = dict(np.load(d / "inputs.npz")), dict(np.load(d / "outputs.npz"))
    model = GroupViTModel.from_pretrained(d, dtype="float32", xp=xp)
    out = model(**inputs, output_segmentation=True)
    for key in ("logits_per_image", "text_embeds", "image_embeds", "segmentation_logits"):
        got = to_numpy(out[key])
        assert got.dtype == np.float32, key
        # float32 rounding over ~10 layers, amplified by exp(logit_scale) = 18 (twice in segmentation)
        assert np.abs(got - ref[key]).max() / np.abs(ref[key]).max() < 1e-4, key


@pytest.mark.parametrize("xp", ["jax", "torch"])
def test_classification_on_jax_and_torch_matches_numpy(xp):
    if xp == "jax":
        jax_x64()
    else:
        pytest.importorskip("torch")
    from groupvit_np.tasks.classify import classify, encode_text
    from groupvit_np.tasks.scenes import make_scene

    weights = data_dir("weights") / "groupvit-demo-scenes"
    tokenizer = CLIPTokenizer.from_pretrained(weights)  # the demo checkpoint's own vocabulary
    image = make_scene(5, size=224).image
    names, templates = ["red circle", "blue square", "green star"], ("a photo of a {}.",)
    ref_model = GroupViTModel.from_pretrained(weights, dtype="float64")
    text = encode_text(ref_model, names, templates, tokenizer)
    ref = dict(classify(ref_model, image, names, text_embeds=text))
    other = GroupViTModel.from_pretrained(weights, dtype="float64", xp=xp)
    got = dict(classify(other, image, names, templates, tokenizer))  # the texts encoded on the backend
    for name in names:
        assert abs(got[name] - ref[name]) < 1e-12, name  # float64 on both; probabilities differ by summation order only


def test_cli_segment_with_backend_jax(tmp_path):
    pytest.importorskip("jax", reason="the jax backend needs jax: pip install -e '.[jax]'")
    example = data_dir("weights") / "groupvit-demo-scenes" / "example.png"
    outs = {}
    for backend in ("numpy", "jax"):
        out = tmp_path / backend
        cmd = [sys.executable, "-m", "groupvit_np", "segment", str(example), "--labels", "red circle,blue star",
               "--out", str(out), "--backend", backend, "--json"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        outs[backend] = done
    assert "compiles the model" in outs["jax"].stderr  # the first-use cost is announced
    labels = [tmp_path / backend / "example_labels.png" for backend in ("numpy", "jax")]
    with Image.open(labels[0]) as a, Image.open(labels[1]) as b:
        # float32 on both, XLA's fused arithmetic against NumPy's: the argmax labels agree nearly everywhere
        same = np.mean(np.asarray(a) == np.asarray(b))
    assert same > 0.99, same


def test_jax_without_x64_refuses_float64_and_runs_float32():
    pytest.importorskip("jax", reason="the jax backend needs jax: pip install -e '.[jax]'")
    code = f"""
import numpy as np
from groupvit_np import GroupViTModel
d = {str(FIXTURES / "model_hf_tiny")!r}
try:
    GroupViTModel.from_pretrained(d, dtype="float64", xp="jax")
except ValueError as e:
    assert "jax_enable_x64" in str(e), e
else:
    raise SystemExit("float64 without x64 was accepted")
inputs = dict(np.load(d + "/inputs.npz"))
model = GroupViTModel.from_pretrained(d, dtype="float32", xp="jax")  # ids become int32, JAX's index type
print(np.asarray(model.get_text_features(inputs["input_ids"], inputs["attention_mask"])).dtype)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "float32"
