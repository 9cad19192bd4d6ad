"""What a new user meets on the command line: every mistake is one line naming the file or flag (exit 1, or 2 for
arguments that contradict each other), nothing is silently wrong or ignored, written files follow the umask.

Most cases run `groupvit-np` in-process on the shipped demo checkpoint (64-px scenes, fast) and a scene image.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

from groupvit_np import __version__
from groupvit_np._resources import data_dir
from groupvit_np.cli import main
from groupvit_np.tasks.scenes import make_scene

DEMO = data_dir("weights") / "groupvit-demo-scenes"
TINY = data_dir("weights") / "groupvit-tiny-random"


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(make_scene(1, size=64).image).save(path)
    return path


def voc_folder(root: Path, truth=None) -> Path:
    """A two-image VOC layout; `truth(i, mask)` may replace an annotation array."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        s = make_scene(i, size=64)
        Image.fromarray(s.image).save(root / "JPEGImages" / f"im{i}.jpg")
        mask = (s.mask > 0).astype(np.uint8) * (i + 1)
        Image.fromarray(truth(i, mask) if truth else mask).save(root / "SegmentationClass" / f"im{i}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("im0\nim1\n")
    return root


# ---------------------------------------------------------------------------------------------------------------
# Rows 4-6: tracebacks on user input.


@pytest.mark.parametrize("template", ["a {} and {}", "a {}{}", "{} {x}", "{0} {}", "a photo of {", "no field"])
@pytest.mark.parametrize("command", ["segment", "classify"])
def test_bad_templates_are_one_line(scene, capsys, command, template):
    rc, out, err = cli([command, scene, "--labels", "red circle,blue star", "--template", template], capsys)
    assert rc == 2 and out == ""
    assert one_line(err).startswith(f"groupvit-np {command}: error: --template: template {template!r}")


def _evaluate(root: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return cli(["evaluate", "--dataset", "voc", "--data-root", root, "--mode", "whole", "--out", out, "--weights",
                TINY, *extra], capsys)  # fmt: skip


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[1, 2]", "is not a saved evaluation state (expected an object"),
        ('{"key": "a\x01b"}', "is not a saved evaluation state (Invalid control character"),
        (b"\xff\xfe", "is not a saved evaluation state"),
        ("", "is not a saved evaluation state (Expecting value"),
    ],
)
def test_a_broken_state_file_names_itself_and_suggests_restart(tmp_path, capsys, content, reason):
    root, out = voc_folder(tmp_path / "VOC2012"), tmp_path / "eval"
    out.mkdir()
    state = out / "evaluate_state.json"
    state.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc, stdout, err = _evaluate(root, out, capsys)
    assert rc == 1 and stdout == ""
    line = one_line(err)
    assert line.startswith(f"groupvit-np evaluate: error: {state} {reason}") and "pass --restart" in line
    rc, stdout, _ = _evaluate(root, out, capsys, "--restart")
    assert rc == 0 and "2 images; metrics saved" in stdout


def test_a_damaged_state_of_the_same_run_is_refused(tmp_path, capsys):
    root, out = voc_folder(tmp_path / "VOC2012"), tmp_path / "eval"
    assert _evaluate(root, out, capsys)[0] == 0
    state = out / "evaluate_state.json"
    saved = json.loads(state.read_text())
    for damage in ({"done": 7}, {"done": "1"}, {"confusion": [[1, 2]]}, {"confusion": [[-1] * 21] * 21}):
        state.write_text(json.dumps({**saved, **damage}))
        rc, _, err = _evaluate(root, out, capsys)
        assert rc == 1 and f"{state} is damaged" in err and "pass --restart" in err, damage


# ---------------------------------------------------------------------------------------------------------------
# Rows 7-10: silent wrong answers.


@pytest.fixture(scope="module", params=["text_projection", "visual_projection"])
def nan_checkpoint(request, tmp_path_factory) -> Path:
    """The demo checkpoint with one head's weights NaN: its text features, or its image embeddings, are NaN."""
    dst = tmp_path_factory.mktemp("nan") / "demo-nan"
    shutil.copytree(DEMO, dst)
    state = load_file(dst / "model.safetensors")
    for key in state:
        if key.startswith(request.param) and key.endswith("weight") and state[key].ndim == 2:
            state[key] = np.full_like(state[key], np.nan)
    save_file(state, dst / "model.safetensors")
    return dst


@pytest.mark.parametrize("command", ["segment", "classify"])
def test_nan_weights_are_an_error_naming_the_checkpoint(nan_checkpoint, scene, tmp_path, capsys, command):
    rc, out, err = cli([command, scene, scene, "--labels", "red circle,blue star", "--weights", nan_checkpoint,
                        "--out", tmp_path], capsys)  # fmt: skip
    assert rc == 1 and out == "" and "%" not in err
    line = one_line(err)
    assert line.startswith(f"groupvit-np {command}: error: {nan_checkpoint}: the model's ")
    assert "are not finite (NaN or inf): its weights are broken" in line


def test_library_segment_refuses_nan_too(nan_checkpoint, scene):
    from groupvit_np import CLIPTokenizer, GroupViTModel
    from groupvit_np.tasks.classify import NonFiniteError, classify
    from groupvit_np.tasks.segmentation import segment
    from groupvit_np.tasks.segmentation_hf import hf_segment

    model, tokenizer = GroupViTModel.from_pretrained(nan_checkpoint), CLIPTokenizer.from_pretrained(nan_checkpoint)
    for run in (segment, hf_segment, classify):
        with pytest.raises(NonFiniteError, match="not finite"):
            run(model, scene, ["red circle", "blue star"], tokenizer=tokenizer)


def test_words_outside_the_demo_vocabulary_are_warned_about(scene, tmp_path, capsys):
    rc, out, err = cli(["segment", scene, "--labels", "cat,dog,sofa", "--out", tmp_path], capsys)
    assert rc == 0 and out.startswith(str(scene))
    line = one_line(err)
    assert line.startswith(f"warning: cat, dog, sofa: not in the vocabulary of the checkpoint {DEMO}")
    assert "(its words: background, blue, circle, green, red, square, star, triangle, yellow)" in line
    assert line.endswith("real photos need a real checkpoint (--weights nvidia/groupvit-gcc-yfcc)")
    rc, _, err = cli(["classify", scene, "--labels", "red circle,cat", "--template", "a {} photo"], capsys)
    assert rc == 0 and one_line(err).startswith("warning: photo, cat: not in the vocabulary")
    rc, _, err = cli(["segment", scene, "--labels", "red circle,blue star", "--out", tmp_path], capsys)
    assert rc == 0 and err == ""  # the demo's own words
    rc, _, err = cli(["classify", scene, "--labels", "cat,dog", "--weights", TINY], capsys)
    assert rc == 0 and "warning" not in err  # CLIP's vocabulary encodes any word


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hf", "--mode", "slide"], "--mode chooses the original inference's windows; --method hf runs HF's"),
        (["--method", "hf", "--mode", "whole"], "--mode chooses the original inference's windows"),
        (["--hf", "--method", "original"], "--hf is --method hf; it cannot be combined with --method original"),
        (["--no-background", "--threshold", "0.5"], "--threshold sets when a pixel becomes background; with --no-bac"),
        (["--revision", "v1"], "--revision applies to Hub repo ids, not to the local checkpoint"),
        (["--revision", "v1", "--weights", str(TINY)], f"not to the local checkpoint {TINY}"),
    ],
)
def test_flags_ignored_together_are_refused(scene, tmp_path, capsys, argv, message):
    rc, out, err = cli(["segment", scene, "--labels", "red circle", "--out", tmp_path, *argv], capsys)
    assert rc == 2 and out == "" and message in one_line(err)
    assert not any(tmp_path.iterdir())  # refused before anything ran


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "{scene}", "--labels", "a,b", "--top", "0"],
        ["classify", "{scene}", "--labels", "a,b", "--top", "-1"],
        ["evaluate", "--dataset", "voc", "--data-root", ".", "--limit", "0"],
        ["evaluate", "--dataset", "voc", "--data-root", ".", "--limit", "-1"],
        ["segment", "{scene}", "--labels", "a", "--max-pixels", "0"],
    ],
)
def test_counts_below_one_are_refused(scene, capsys, argv):
    rc, out, err = cli([a.format(scene=scene) for a in argv], capsys)
    flag = argv[-2]
    assert rc == 2 and out == "" and f"error: argument {flag}: must be at least 1, got {argv[-1]}" in err


def test_top_limits_json_too(scene, capsys):
    rc, out, _ = cli(["classify", scene, "--labels", "red circle,blue star,green square", "--json"], capsys)
    assert rc == 0 and len(json.loads(out)["results"][0]["predictions"]) == 3  # all, by default
    rc, out, _ = cli(["classify", scene, "--labels", "red circle,blue star,green square", "--json", "--top", "1"],
                     capsys)  # fmt: skip
    assert rc == 0 and len(json.loads(out)["results"][0]["predictions"]) == 1


# ---------------------------------------------------------------------------------------------------------------
# Rows 11-13: files and messages.


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_follow_the_umask(scene, tmp_path, capsys, mask):
    old = os.umask(mask)
    try:
        assert cli(["segment", scene, "--labels", "red circle", "--out", tmp_path / "out"], capsys)[0] == 0
        assert cli(["classify", scene, "--labels", "red circle,blue star", "--out", tmp_path / "out"], capsys)[0] == 0
        assert cli(["convert", TINY, tmp_path / "converted"], capsys)[0] == 0
    finally:
        os.umask(old)
    written = sorted((tmp_path / "out").iterdir())
    assert len(written) == 6  # five pictures and classify.json
    for path in [*written, *(tmp_path / "converted").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    for folder in (tmp_path / "out", tmp_path / "converted"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, folder


@pytest.mark.parametrize("command", ["segment", "classify", "evaluate"])
def test_out_that_is_a_file_is_refused_before_inference(scene, tmp_path, capsys, monkeypatch, command):
    import groupvit_np.model

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(groupvit_np.model.GroupViTModel, "from_pretrained", no_loading)
    out = tmp_path / "results.txt"
    out.write_text("mine")
    args = {"segment": [scene, "--labels", "red circle"], "classify": [scene, "--labels", "red circle,cat"],
            "evaluate": ["--dataset", "voc", "--data-root", voc_folder(tmp_path / "VOC")]}[command]  # fmt: skip
    rc, stdout, err = cli([command, *args, "--out", out], capsys)
    assert rc == 1 and stdout == ""
    assert one_line(err) == f"groupvit-np {command}: error: --out {out} is a file; pass a folder"
    assert out.read_text() == "mine"


@pytest.mark.parametrize(
    ("config", "reason"),
    [("{", "not valid JSON"), ("[1]", "expected a JSON object, found list"),
     ('{"vision_config": {"depths": 3}}', "not a usable GroupViTConfig")],
)  # fmt: skip
def test_a_broken_config_json_names_the_file(scene, tmp_path, capsys, config, reason):
    from groupvit_np import GroupViTModel

    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY, ckpt)
    (ckpt / "config.json").write_text(config)
    with pytest.raises(ValueError, match=f"{ckpt / 'config.json'}: .*{reason}"):
        GroupViTModel.from_pretrained(ckpt)
    rc, _, err = cli(["segment", scene, "--labels", "red circle", "--weights", ckpt, "--out", tmp_path], capsys)
    line = one_line(err)
    assert rc == 1 and line.startswith(f"groupvit-np segment: error: cannot load weights {ckpt}: {ckpt}/config.json")
    assert "download" not in line  # the user chose these weights: no advice to fetch others


@pytest.mark.parametrize(
    ("truth", "reason"),
    [(lambda i, m: m[:-3], "prediction (64, 64) and ground truth (61, 64) differ in size"),
     (lambda i, m: m * 50, "ground truth holds label 50 but the label set has 21 classes")],
)  # fmt: skip
def test_evaluate_errors_name_the_annotation(tmp_path, capsys, truth, reason):
    root = voc_folder(tmp_path / "VOC2012", truth)
    rc, out, err = _evaluate(root, tmp_path / "eval", capsys)
    assert rc == 1 and out == ""
    annotation = root / "SegmentationClass" / "im0.png"
    assert one_line(err) == (f"groupvit-np evaluate: error: {annotation}: {reason} (image "
                             f"{root / 'JPEGImages' / 'im0.jpg'})")  # fmt: skip


@pytest.mark.parametrize("command", ["segment", "classify"])
def test_a_folder_given_as_an_image(tmp_path, capsys, command):
    rc, _, err = cli([command, tmp_path, "--labels", "red circle,blue star"], capsys)
    assert rc == 1 and one_line(err) == f"groupvit-np {command}: error: {tmp_path} is a folder, not an image file"
    from groupvit_np.preprocessing.image import load_image

    with pytest.raises(IsADirectoryError, match="is a folder, not an image file"):
        load_image(tmp_path)


def test_max_pixels_guards_and_can_be_raised(scene, tmp_path, capsys, monkeypatch):
    rc, out, err = cli(["segment", scene, "--labels", "red circle", "--max-pixels", "4000", "--out", tmp_path],
                       capsys)  # fmt: skip
    assert rc == 1 and out == ""
    assert one_line(err) == (f"groupvit-np segment: error: {scene}: 4,096 pixels is over --max-pixels 4,000 (a guard "
                             "against decompression bombs); if you trust the file, pass --max-pixels 4096")  # fmt: skip
    # Pillow's own limit, which would warn here (and refuse at twice it), gives way to the flag: no raw warning
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, out, err = cli(["segment", scene, "--labels", "red circle", "--max-pixels", "4096", "--out", tmp_path],
                           capsys)  # fmt: skip
    assert rc == 0 and err == "" and not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == 3000  # restored after the command


def test_convert_and_download_messages_name_their_subcommand(tmp_path, capsys):
    (tmp_path / "dst").mkdir()
    rc, _, err = cli(["convert", TINY, tmp_path / "dst"], capsys)
    assert rc == 1
    assert one_line(err) == f"groupvit-np convert: error: {tmp_path / 'dst'} already exists; pass --force to replace it"
    rc, _, err = cli(["convert", tmp_path / "none.pth", tmp_path / "new"], capsys)
    assert rc == 1 and one_line(err) == f"groupvit-np convert: error: {tmp_path / 'none.pth'}: no such file or folder"
    rc, _, err = cli(["convert", TINY, tmp_path / "new", "--revision", "v1"], capsys)
    assert rc == 2 and "--revision applies to Hub repo ids" in one_line(err)
    rc, _, err = cli(["download", "./weights/demo"], capsys)
    assert rc == 1 and one_line(err).startswith("groupvit-np download: error: './weights/demo' is not a Hub repo id")


@pytest.mark.parametrize("argv", [["segment", "x.jpg", "--dataset", "ade"], ["evaluate", "--dataset", "ade",
                                                                            "--data-root", "."]])  # fmt: skip
def test_unknown_dataset_is_a_usage_error(capsys, argv):
    rc, _, err = cli(argv, capsys)
    assert rc == 2 and "argument --dataset: invalid choice: 'ade' (choose from 'voc', 'context', 'coco')" in err


def test_version(capsys):
    rc, out, _ = cli(["--version"], capsys)
    assert rc == 0 and out == f"groupvit-np {__version__}\n"


# ---------------------------------------------------------------------------------------------------------------
# Rows 15-16: large images, names outside Latin script.


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_large_image_is_decoded_smaller_with_a_progress_line(tmp_path, capsys, monkeypatch, fmt):
    monkeypatch.setattr("groupvit_np.cli.inputs.LONG_IMAGE", 100_000)  # for 16 and 64 Mpx and 1024 px, at
    monkeypatch.setattr("groupvit_np.cli.inputs.LARGE_IMAGE", 100_000)  # test sizes
    monkeypatch.setattr("groupvit_np.cli.inputs.REDUCE_TO", 64)
    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(make_scene(2, size=64).image).resize((400, 300)).save(path, format=fmt)
    if fmt == "JPEG":  # the decoder's DCT scaling, not a reduce() of the full-size pixels
        monkeypatch.setattr(Image.Image, "reduce", lambda *a, **k: pytest.fail("reduce() on a JPEG"))
    rc, out, err = cli(["segment", path, "--labels", "red circle,blue star", "--json", "--out", tmp_path], capsys)
    assert rc == 0
    result = json.loads(out)["results"][0]
    assert result["size"] == [75, 100] and result["scale"] == 0.25  # 300 // 64 = 4: a quarter of each side
    assert Image.open(tmp_path / "big_labels.png").size == (100, 75)
    line = one_line(err)
    assert line.startswith(f"{path}: 400x300 pixels; decoding at a reduced scale; 100x75 (scale 1/4: pictures and ")
    assert "; segmenting; writing pictures; done in " in line
    rc, out, err = cli(["segment", path, "--labels", "red circle", "--json", "--out", tmp_path, "--hf"], capsys)
    assert rc == 0 and json.loads(out)["results"][0]["size"] == [75, 100]


def test_a_long_image_gets_a_progress_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("groupvit_np.cli.inputs.LONG_IMAGE", 100_000)  # for 4096 x 4096, at a test size
    path = tmp_path / "long.png"
    Image.fromarray(make_scene(2, size=64).image).resize((400, 300)).save(path)
    rc, out, err = cli(["segment", path, "--labels", "red circle", "--json", "--out", tmp_path], capsys)
    assert rc == 0 and json.loads(out)["results"][0]["size"] == [300, 400]  # not reduced
    assert one_line(err).startswith(f"{path}: 400x300 pixels; decoding; segmenting; writing pictures; done in ")


def test_load_image_reduces_only_by_whole_factors(tmp_path):
    from groupvit_np.preprocessing.image import load_image

    path = tmp_path / "x.jpg"
    Image.fromarray(make_scene(3, size=64).image).resize((1000, 700)).save(path)
    assert load_image(path).size == (1000, 700) and "original_size" not in load_image(path).info
    small = load_image(path, reduce_to=300)  # 700 // 300 = 2: half size
    assert small.size == (500, 350) and small.info["original_size"] == (1000, 700)
    assert load_image(path, reduce_to=100).size == (250, 175)  # 1/7 wanted: DCT's 1/4 (1/8 would be too small)
    assert load_image(path, reduce_to=701).size == (1000, 700)


def test_labels_outside_latin_script_get_a_font_that_draws_them():
    from groupvit_np.tasks.fonts import fonts_for, missing_chars

    fonts = fonts_for(["cat", "café", "кот"], 20)
    assert fonts["cat"] is not None and not missing_chars(fonts["cat"], "cat")
    if missing_chars(fonts["café"], "café"):
        pytest.skip("no font on this machine draws é")
    assert not missing_chars(fonts["кот"], "кот") and not missing_chars(fonts["café"], "café")


def test_names_no_font_draws_are_reported_once(scene, tmp_path, capsys, monkeypatch):
    import groupvit_np.tasks.fonts as fonts

    monkeypatch.setattr(fonts, "FONT_FILES", ())  # only Pillow's own font, which has no "é" and no "猫"
    rc, _, err = cli(["segment", scene, scene, "--labels", "café,猫,red circle", "--out", tmp_path], capsys)
    assert rc == 0
    lines = [line for line in err.splitlines() if "font" in line]
    assert lines == ["warning: no font on this system draws é猫 (in café, 猫); those names show as boxes in the "
                     "pictures: install a font that covers them (e.g. Noto Sans CJK)"]  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "reason"),
    [('{"templates": "a {}"}', "templates is a str, not a list"), ('{"image_size": "64"}', "image_size is a str"),
     ('{"templates": ["a {} {}"]}', "template 'a {} {}' must hold exactly one"), ("[]", "expected a JSON object")],
)  # fmt: skip
def test_broken_checkpoint_settings_are_one_line(scene, tmp_path, capsys, settings, reason):
    ckpt = tmp_path / "demo"
    shutil.copytree(DEMO, ckpt)
    (ckpt / "segmentation.json").write_text(settings)
    rc, out, err = cli(["segment", scene, "--labels", "red circle", "--weights", ckpt, "--out", tmp_path], capsys)
    assert rc == 1 and out == "" and reason in one_line(err)
