"""The segment / classify / evaluate subcommands end to end: real PNGs opened and checked, one-line user errors.

The checkpoint is the shipped tiny random one with its assignment logits sharpened (see test_segmentation.py),
written to a temporary folder so that `--weights` loads it like any user checkpoint.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

from groupvit_np._resources import data_dir
from groupvit_np.cli import build_parser
from groupvit_np.tasks.datasets import custom_labels, dataset_labels
from groupvit_np.tasks.scenes import make_scene


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    src = data_dir("weights") / "groupvit-tiny-random"
    dst = tmp_path_factory.mktemp("ckpt")
    shutil.copy(src / "config.json", dst / "config.json")
    state = load_file(src / "model.safetensors")
    for key in list(state):
        if ".downsample.assign.q_proj.weight" in key or ".downsample.assign.k_proj.weight" in key:
            state[key] = (state[key].astype(np.float32) * 24).astype(state[key].dtype)
    save_file(state, dst / "model.safetensors")
    return str(dst)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    s = make_scene(3, size=256, objects=(3, 3), radius=(30, 60))
    path = tmp_path_factory.mktemp("img") / "scene.jpg"
    Image.fromarray(s.image).resize((517, 333), Image.Resampling.BICUBIC).save(path, quality=95)
    return str(path)


def run(argv, capsys):
    args = build_parser().parse_args(argv)
    rc = args.run(args)
    out, err = capsys.readouterr()
    return rc, out, err


def open_png(path):
    with Image.open(path) as im:
        im.load()
        return im.copy()


def test_segment_writes_real_pictures(weights, image, tmp_path, capsys):
    out_dir = tmp_path / "out"
    labels = "red circle,blue square,green star,stripes"
    rc, out, err = run(["segment", image, "--labels", labels, "--threshold", "0.6", "--weights", weights,
                        "--out", str(out_dir), "--json"], capsys)  # fmt: skip
    assert rc == 0, err
    result = json.loads(out)["results"][0]
    assert result["size"] == [333, 517] and result["method"] == "original" and result["mode"] == "whole"
    assert abs(sum(c["fraction"] for c in result["classes"]) - 1) < 1e-9
    assert set(result["files"]) == {"labels", "overlay", "groups1", "groups2", "panel"}

    palette = custom_labels(labels.split(",")).palette
    pred = open_png(out_dir / "scene_labels.png")
    assert pred.mode == "P" and pred.size == (517, 333)
    assert pred.getpalette()[: 3 * 5] == palette[:5].reshape(-1).tolist()  # background black, then the classes
    values = np.unique(np.asarray(pred))
    assert len(values) >= 2 and values.max() <= 4  # not blank: background and at least one class
    for name in ("overlay", "groups1", "groups2"):
        picture = np.asarray(open_png(out_dir / f"scene_{name}.png"))
        assert picture.shape == (333, 517, 3) and picture.std() > 10, name  # the image with colours on it
    groups = np.asarray(open_png(out_dir / "scene_groups2.png")).reshape(-1, 3)
    assert len(np.unique(groups, axis=0)) > 50  # several group colours blended over a textured image
    panel = open_png(out_dir / "scene_panel.png")
    assert panel.height > 333 and panel.width > 4 * 517  # four tiles at full height, titles and legend


def test_segment_dataset_slide_and_hf(weights, image, tmp_path, capsys):
    rc, out, err = run(["segment", image, "--dataset", "voc", "--mode", "slide", "--weights", weights,
                        "--out", str(tmp_path)], capsys)  # fmt: skip
    assert rc == 0, err
    assert out.startswith(image) and "scene_panel.png" in out
    pred = open_png(tmp_path / "scene_labels.png")
    assert pred.getpalette()[3:6] == dataset_labels("voc").palette[1].tolist()
    assert not (tmp_path / "scene_groups1.png").exists()  # slide mode has no single set of groups

    rc, out, err = run(["segment", image, "--dataset", "coco", "--hf", "--weights", weights, "--out",
                        str(tmp_path / "hf"), "--json"], capsys)  # fmt: skip
    assert rc == 0, err
    labels = np.asarray(open_png(tmp_path / "hf" / "scene_labels.png"))
    assert (labels[:, :91] == 255).all() and labels[:, 91:425].max() <= 80  # outside HF's centre crop: ignore


def with_settings(weights, tmp_path, settings):
    """A copy of the test checkpoint with its own segmentation.json (the inference settings a checkpoint names)."""
    folder = tmp_path / "ckpt"
    shutil.copytree(weights, folder)
    (folder / "segmentation.json").write_text(json.dumps(settings))
    return folder


def test_segment_follows_the_checkpoints_method_and_threshold(weights, image, tmp_path, capsys):
    from groupvit_np import GroupViTModel
    from groupvit_np.preprocessing.image_processor import CLIPImageProcessor
    from groupvit_np.preprocessing.tokenizer import CLIPTokenizer
    from groupvit_np.tasks.segmentation_hf import hf_segment

    names = ["red circle", "blue square", "sky"]
    model = GroupViTModel.from_pretrained(weights)
    plain = hf_segment(model, image, ["background", *names])  # HF's rule: background never wins
    # a threshold that splits the crop: the median over its pixels of the best weighted cosine
    pixels = CLIPImageProcessor()(np.asarray(Image.open(image)))["pixel_values"]
    enc = CLIPTokenizer.from_pretrained()([f"a photo of a {n}." for n in names], padding=True, return_tensors="np")
    out = model(enc["input_ids"], pixels, enc["attention_mask"], output_segmentation=True)
    threshold = float(np.median((out.segmentation_logits[0] / np.exp(model.params["logit_scale"]) ** 2).max(0)))
    folder = with_settings(weights, tmp_path, {"method": "hf", "threshold_hf": threshold})
    rc, out_text, err = run(["segment", image, "--labels", ",".join(names), "--weights", str(folder), "--out",
                             str(tmp_path / "a"), "--json"], capsys)  # fmt: skip
    assert rc == 0, err
    result = json.loads(out_text)["results"][0]
    assert result["method"] == "hf"
    got = np.asarray(open_png(tmp_path / "a" / "scene_labels.png"))
    expected = hf_segment(model, image, ["background", *names], threshold=threshold).labels
    np.testing.assert_array_equal(got, expected)
    inside = got[got != 255]
    assert 0.3 < (inside == 0).mean() < 0.7  # the checkpoint's threshold made about half the crop background
    assert (plain.labels != 0).all()
    # a flag overrides the checkpoint: --method original runs the original inference instead
    rc, out_text, _ = run(["segment", image, "--labels", ",".join(names), "--weights", str(folder), "--out",
                           str(tmp_path / "b"), "--json", "--method", "original"], capsys)  # fmt: skip
    assert rc == 0 and json.loads(out_text)["results"][0]["method"] == "original"


def test_segment_normalises_as_the_checkpoint_was_trained(weights, image, tmp_path, capsys):
    from groupvit_np import GroupViTModel
    from groupvit_np.tasks.segmentation import segment

    clip_mean, clip_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    folder = with_settings(weights, tmp_path, {"image_mean": clip_mean, "image_std": clip_std})
    names = ["red circle", "blue square", "sky"]
    rc, _, err = run(["segment", image, "--labels", ",".join(names), "--weights", str(folder), "--out",
                      str(tmp_path), "--no-background"], capsys)  # fmt: skip
    assert rc == 0, err
    got = np.asarray(open_png(tmp_path / "scene_labels.png"))
    model = GroupViTModel.from_pretrained(weights)
    templates = ["a photo of a {}."]
    with_clip = segment(model, image, names, mean=clip_mean, std=clip_std, templates=templates).labels
    with_imagenet = segment(model, image, names, templates=templates).labels
    np.testing.assert_array_equal(got, with_clip)
    assert (with_clip != with_imagenet).mean() > 0.01  # the statistics matter, so the test can tell them apart


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "fast"}, "method is 'fast', not 'original' or 'hf'"),
        ({"image_mean": [0.5, 0.5]}, "image_mean must be three numbers"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std must be positive"),
        ({"threshold_hf": "high"}, "threshold_hf is a str, not a number"),
    ],
)
def test_bad_checkpoint_settings_are_one_line(weights, image, tmp_path, capsys, settings, message):
    folder = with_settings(weights, tmp_path, settings)
    rc, out, err = run(["segment", image, "--labels", "cat,dog", "--weights", str(folder), "--out", str(tmp_path)],
                       capsys)  # fmt: skip
    assert rc == 1 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_classify(weights, image, tmp_path, capsys):
    rc, out, err = run(["classify", image, "--labels", "cat, dog ,red circle", "--weights", weights, "--json",
                        "--out", str(tmp_path)], capsys)  # fmt: skip
    assert rc == 0, err
    preds = json.loads(out)["results"][0]["predictions"]
    assert sorted(p["label"] for p in preds) == ["cat", "dog", "red circle"]
    assert abs(sum(p["probability"] for p in preds) - 1) < 1e-6  # float32 softmax
    assert json.loads((tmp_path / "classify.json").read_text())["results"][0]["predictions"] == preds
    rc, out, _ = run(["classify", image, "--labels", "cat,dog", "--weights", weights, "--template", "{}"], capsys)
    assert rc == 0 and out.splitlines()[0] == image and out.count("%") == 2


def voc_folder(tmp_path):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        s = make_scene(i, size=96, objects=(2, 2), radius=(15, 25))
        Image.fromarray(s.image).save(root / "JPEGImages" / f"im{i}.jpg")
        Image.fromarray((s.mask > 0).astype(np.uint8) * (i + 1)).save(root / "SegmentationClass" / f"im{i}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("im0\nim1\n")
    return root


def test_evaluate_resumes(weights, tmp_path, capsys):
    root = voc_folder(tmp_path)
    argv = ["evaluate", "--dataset", "voc", "--data-root", str(root), "--mode", "whole", "--weights", weights,
            "--out", str(tmp_path / "eval")]  # fmt: skip
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    assert out.splitlines()[1].startswith("background") and "mean" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 2 and len(metrics["IoU"]) == 21
    rc, out2, _ = run([*argv, "--json"], capsys)  # everything done: the saved state answers at once
    assert rc == 0 and json.loads(out2)["mIoU"] == metrics["mIoU"]


def test_evaluate_ctrl_c_keeps_progress(weights, tmp_path, capsys, monkeypatch):
    import groupvit_np.tasks.segmentation as seg

    real, calls = seg.segment, []

    def interrupted_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "segment", interrupted_on_second)
    argv = ["evaluate", "--dataset", "voc", "--data-root", str(voc_folder(tmp_path)), "--mode", "whole",
            "--weights", weights, "--out", str(tmp_path / "eval")]  # fmt: skip
    rc, out, err = run(argv, capsys)
    assert rc == 130 and out == "" and "run the same command to resume" in err
    assert json.loads((tmp_path / "eval" / "evaluate_state.json").read_text())["done"] == 1
    monkeypatch.setattr(seg, "segment", real)
    rc, out, _ = run(argv, capsys)
    assert rc == 0 and "2 images; metrics saved" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["segment", "missing.jpg", "--labels", "cat"], "no such image file: missing.jpg"),
        (["segment", "{bad}", "--labels", "cat,dog"], "cannot read image"),
        (["segment", "{image}", "--labels", "cat,cat"], "duplicate labels: cat"),
        (["segment", "{image}", "--labels", "cat", "--threshold", "2"], "--threshold must lie in [0, 1]"),
        (["classify", "{image}", "--labels", "cat"], "at least two distinct names"),
        (["evaluate", "--dataset", "voc", "--data-root", "{tmp}"], "voc layout not found"),
    ],
)
def test_user_errors_are_one_line(weights, image, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    argv = [a.format(image=image, bad=bad, tmp=tmp_path) for a in argv] + ["--weights", weights]
    rc, out, err = run(argv, capsys)
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_missing_weights_name_the_path(image, tmp_path, capsys):
    rc, _, err = run(["segment", image, "--labels", "cat", "--weights", str(tmp_path / "nowhere")], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert f"--weights {tmp_path / 'nowhere'}: no such file or folder" in err and "download" not in err


def test_cli_main_runs_segment(weights, image, tmp_path, capsys):
    from groupvit_np import cli  # a package module that fails to import is a failure, not a skip

    assert "segment" in cli.build_parser().format_help()
    rc = cli.main(["segment", image, "--labels", "cat,dog", "--weights", weights, "--out", str(tmp_path)])
    assert rc == 0 and (tmp_path / "scene_panel.png").is_file()
