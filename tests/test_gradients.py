"""Gradients: `jax.grad` of our contrastive loss against torch autograd through HF's `GroupViTModel`.

Every parameter, float64, on both fixture configs: eval mode (straight-through hard assignment), and train mode
with Gumbel assignment, the noise passed to both sides. This shows that the forward the parity tests check also
differentiates as HF's does. Needs jax, torch and transformers; skipped otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, jax_x64

jax_x64()
torch = pytest.importorskip("torch", reason="the gradient reference needs torch: pip install -e '.[reference]'")
transformers = pytest.importorskip("transformers", reason="pip install -e '.[reference]'")

import jax  # noqa: E402

from groupvit_np import GroupViTModel  # noqa: E402
from groupvit_np.nn import functional as F  # noqa: E402

pytestmark = pytest.mark.reference
NAMES = ["hf_tiny", "small_legacy"]


def fixture(name):
    d = FIXTURES / f"model_{name}"
    return d, dict(np.load(d / "inputs.npz"))


def gumbel_noise(model, inputs, seed):
    """Gumbel(0, 1) draws of each grouping stage's logits shape, [B, S, N]."""
    cfg = model.config.vision_config
    b, n = inputs["pixel_values"].shape[0], (cfg.image_size // cfg.patch_size) ** 2
    rng, shapes = np.random.default_rng(seed), []
    for groups, out in zip(cfg.num_group_tokens, cfg.num_output_groups, strict=True):
        if groups:
            shapes.append((b, out, n))
            n = out
    return [-np.log(-np.log(rng.uniform(size=s))) for s in shapes]


def hf_gradients(directory, inputs, noise, monkeypatch):
    """{name: grad} of HF's loss by torch autograd, float64; train-mode Gumbel assignment when `noise` is given."""
    hf = transformers.GroupViTModel.from_pretrained(directory, dtype=torch.float64)
    hf.eval()
    if noise is not None:
        # HF draws the noise inside `gumbel_softmax` with Gumbel(0, 1).sample(logits.shape): hand it ours instead,
        # in stage order. Train mode also switches BatchNorm to batch statistics; the heads keep their running
        # statistics (our model has no training-time BatchNorm), so only the grouping stages train.
        hf.train()
        for module in hf.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.eval()
        queue = [torch.from_numpy(n) for n in noise]

        def sample(self, shape=torch.Size()):  # noqa: B008 - torch's own default
            drawn = queue.pop(0)
            assert tuple(drawn.shape) == tuple(shape)
            return drawn

        monkeypatch.setattr(torch.distributions.gumbel.Gumbel, "sample", sample)
    torch.set_default_dtype(torch.float64)  # HF's text mask cannot be built in float64 otherwise (spec 13)
    try:
        out = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()}, return_loss=True)
        out.loss.backward()
    finally:
        torch.set_default_dtype(torch.float32)
    if noise is not None:
        assert not queue, "HF drew fewer Gumbel samples than there are grouping stages"
    return float(out.loss.detach()), {k: p.grad.numpy() for k, p in hf.named_parameters()}


def our_gradients(directory, inputs, noise):
    model = GroupViTModel.from_pretrained(directory, dtype="float64", xp="jax")
    ids, pixels, mask = (inputs[k] for k in ("input_ids", "pixel_values", "attention_mask"))  # moved by F.loss
    grad = jax.value_and_grad(lambda p: F.loss(p, model.config, ids, pixels, mask, gumbel_noise=noise))
    # Unoptimised machine code compiles in about half the time, and these small arrays do not need fast code.
    value, grads = jax.jit(grad, compiler_options={"xla_backend_optimization_level": 0})(model.params)
    return float(value), {k: np.asarray(g) for k, g in F.named_leaves(grads).items()}


@pytest.mark.parametrize("gumbel", [False, True], ids=["eval", "gumbel"])
@pytest.mark.parametrize("name", NAMES)
def test_grad_of_the_loss_matches_torch_autograd_through_hf(name, gumbel, monkeypatch):
    d, inputs = fixture(name)
    model = GroupViTModel.from_pretrained(d, dtype="float64")
    noise = gumbel_noise(model, inputs, seed=3) if gumbel else None
    hf_loss, expected = hf_gradients(d, inputs, noise, monkeypatch)
    our_loss, got = our_gradients(d, inputs, noise)
    buffers = {k for k in got if k.endswith(("running_mean", "running_var"))}  # BatchNorm statistics: torch buffers
    assert sorted(set(got) - buffers) == sorted(expected)  # a gradient for every parameter, under HF's names
    assert abs(our_loss - hf_loss) < 1e-12  # float64 on both sides; only the order of the sums differs (~1e-15)
    worst, zero = 0.0, []
    top = max(np.abs(g).max() for g in expected.values())
    for key, g in expected.items():
        scale = np.abs(g).max()
        if scale < 1e-12 * top:
            # Zero by symmetry: every k_proj.bias shifts all of a query's logits equally (softmax over keys), as
            # assign.q_proj.bias does for a token's logits (softmax over groups), and the token-mixing fc2 biases
            # add a per-token constant that the next LayerNorm removes. Both sides hold rounding noise there.
            assert np.abs(got[key]).max() < 1e-12 * top, key
            zero.append(key)
            continue
        err = np.abs(got[key] - g).max() / scale
        worst = max(worst, err)
        # float64 on both sides; the assignments are far from ties (fixture meta), so only summation order and
        # our erf's derivative (an approximation's, to ~1e-14) separate the two (~3e-14 seen).
        assert err <= 1e-8, (key, err)
    assert all(k.endswith(("k_proj.bias", "q_proj.bias", "fc2.bias")) for k in zero), zero
    print(
        f"{name} {'gumbel' if gumbel else 'eval'}: loss {our_loss:.6f}; {len(expected) - len(zero)} gradients, max "
        f"relative error {worst:.2e}; {len(zero)} zero by symmetry"
    )
