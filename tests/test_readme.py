"""Every Python block of the README runs, on the shipped tiny checkpoint and a generated image, and gives what its
comments say: the shapes (at the tiny checkpoint's widths), the pooling rules, and, with transformers installed,
transformers' own numbers on the same inputs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from parity import assert_close
from PIL import Image

from groupvit_np._resources import data_dir

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
TINY = data_dir("weights") / "groupvit-tiny-random"  # width 32 everywhere; 8 output groups; CLIP's vocabulary
BOS, EOS = 49406, 49407


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


def run_block(index: int, folder: Path) -> list[dict]:
    """Run README block `index` with the repo id swapped for the tiny checkpoint, in `folder` (where cats.jpg is).

    Paragraphs run in order and the names each one leaves are kept, so values a later paragraph overwrites (block
    3 reuses `outputs` and `pooled_output`) can still be checked.
    """
    image = folder / "cats.jpg"
    if not image.is_file():  # the same picture for every block, so their results can be compared
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(image)
    code = BLOCKS[index].replace('"nvidia/groupvit-gcc-yfcc"', repr(str(TINY)))
    namespace: dict = {}
    states = []
    for n, paragraph in enumerate(code.split("\n\n")):
        exec(compile(paragraph, f"README block {index}, paragraph {n}", "exec"), namespace)  # noqa: S102 - our README
        states.append(dict(namespace))
    return states


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    try:
        # The JAX block's gradients are checked by test_readme_block_runs_with_its_repo_id (it needs jax).
        yield [None if "import jax" in block else run_block(i, folder) for i, block in enumerate(BLOCKS)]
    finally:
        mp.undo()


def test_block_0_clip_probabilities(blocks):
    ns = blocks[0][-1]
    assert ns["logits_per_image"].shape == (1, 2)
    assert_close(ns["probs"].sum(1), [1.0], atol=1e-6)  # float32 softmax of two numbers: a few ulps off 1


def test_block_1_text_features_are_the_unnormalised_embeds(blocks):
    features, embeds = blocks[1][-1]["text_features"], blocks[0][-1]["outputs"].text_embeds
    assert features.shape == (2, 32)  # the README's [2, 256] at the tiny checkpoint's projection width
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    assert np.all(np.abs(norms - 1) > 1e-3)  # "not normalised"
    # the same texts, padded the same way, through get_text_features and through the full forward (float32)
    assert_close(features / norms, embeds, atol=1e-6)


def test_block_2_image_features_are_the_unnormalised_embeds(blocks):
    features, embeds = blocks[2][-1]["image_features"], blocks[0][-1]["outputs"].image_embeds
    assert features.shape == (1, 32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    assert np.all(np.abs(norms - 1) > 1e-3)
    assert_close(features / norms, embeds, atol=1e-6)  # the same image through two routes, float32


def test_block_3_tower_outputs_and_their_pooling(blocks):
    text, vision = blocks[3][1], blocks[3][2]
    ids = text["tokenizer"](["a photo of a cat", "a photo of a dog"], padding=True, return_tensors="np")["input_ids"]
    assert ids.tolist() == [[BOS, 320, 1125, 539, 320, 2368, EOS], [BOS, 320, 1125, 539, 320, 1929, EOS]]
    assert text["last_hidden_state"].shape == (2, 7, 32) and text["pooled_output"].shape == (2, 32)
    # the text tower pools at each text's EOS (position 6 in both): a row of last_hidden_state, exactly
    np.testing.assert_array_equal(text["pooled_output"], text["last_hidden_state"][:, 6])
    assert vision["last_hidden_state"].shape == (1, 8, 32) and vision["pooled_output"].shape == (1, 32)
    # the vision tower pools by averaging its 8 output groups (float32: the mean's summation order)
    assert_close(vision["pooled_output"], vision["last_hidden_state"].mean(1), atol=1e-6)


@pytest.mark.reference
def test_readme_values_match_transformers(blocks):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.GroupViTModel.from_pretrained(TINY, dtype=torch.float32).eval()
    b0, b3t, b3v = blocks[0][-1], blocks[3][1], blocks[3][2]
    inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in b0["inputs"].items()}  # our processor's output
    with torch.no_grad():
        o = hf(**inputs)
        text = hf.text_model(inputs["input_ids"], inputs["attention_mask"])
        vision = hf.vision_model(inputs["pixel_values"])
        expected = {
            "logits_per_image": (b0["logits_per_image"], o.logits_per_image),
            "text_features": (blocks[1][-1]["text_features"], hf.get_text_features(**{
                k: inputs[k] for k in ("input_ids", "attention_mask")})),
            "image_features": (blocks[2][-1]["image_features"], hf.get_image_features(inputs["pixel_values"])),
            "text last_hidden_state": (b3t["last_hidden_state"], text.last_hidden_state),
            "text pooled_output": (b3t["pooled_output"], text.pooler_output),
            "vision last_hidden_state": (b3v["last_hidden_state"], vision.last_hidden_state),
            "vision pooled_output": (b3v["pooled_output"], vision.pooler_output),
        }  # fmt: skip
    for name, (ours, theirs) in expected.items():
        theirs = theirs.numpy()
        # two float32 implementations, different summation orders: relative 1e-4 of the output's scale
        assert_close(ours, theirs, atol=1e-4 * np.abs(theirs).max(), err_msg=name)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_with_its_repo_id(index, tmp_path, monkeypatch):
    """The blocks as written, "nvidia/groupvit-gcc-yfcc" and all, on a Hugging Face cache holding the tiny model."""
    if "import jax" in BLOCKS[index]:
        pytest.importorskip("jax", reason="this README example needs jax: pip install -e '.[jax]'")
    cache = tmp_path / "hub"
    snapshot = cache / "models--nvidia--groupvit-gcc-yfcc" / "snapshots" / ("c" * 40)
    shutil.copytree(data_dir("weights") / "groupvit-tiny-random", snapshot)
    (cache / "models--nvidia--groupvit-gcc-yfcc" / "refs").mkdir()
    (cache / "models--nvidia--groupvit-gcc-yfcc" / "refs" / "main").write_text("c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    image = tmp_path / "cats.jpg"
    Image.fromarray(np.random.default_rng(index).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(image)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), namespace)  # noqa: S102 - our own README
    assert "nvidia/groupvit-gcc-yfcc" in BLOCKS[index]
    if "text_features" in namespace:
        assert namespace["text_features"].shape == (2, 32)  # the tiny checkpoint projects to 32
    if "grads" in namespace:
        assert "vision_model.embeddings.layernorm.weight" in namespace["grads"]
        assert float(abs(namespace["grads"]["logit_scale"])) > 0
        # F.loss is what the model object computes with return_loss=True (float64, both compiled by jax.jit)
        out = namespace["model"](**namespace["batch"], return_loss=True)
        assert_close(namespace["loss"], out.loss, atol=1e-12, err_msg="README's F.loss vs model(return_loss=True)")
