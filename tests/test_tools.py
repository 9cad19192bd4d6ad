"""The training and evaluation tools of the demo checkpoint: the matching that its phrase loss uses, the metrics that
tools/eval_cli.py reports, and that an interrupted training run continues bit for bit."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_assignment_is_the_best_of_all_one_to_one_matchings():
    best_assignment = tool("train_demo").best_assignment
    rng = np.random.default_rng(0)
    for _ in range(300):
        groups, phrases = int(rng.integers(3, 9)), int(rng.integers(1, 4))
        score = rng.normal(size=(groups, phrases))
        brute = max(itertools.permutations(range(groups), phrases),
                    key=lambda gs: sum(score[g, j] for j, g in enumerate(gs)))  # fmt: skip
        assert best_assignment(score) == brute
    # the greedy choice is not the best one: phrase 0 prefers group 0, but phrase 1 needs it more
    assert best_assignment(np.array([[1.0, 5.0], [0.9, 0.0]])) == (1, 0)


def test_matching_with_min_mass_skips_empty_groups():
    matched_groups = tool("train_demo").matched_groups
    table = np.log(np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]))  # 3 groups x (2 phrases + nothing)
    mass = np.array([0.0, 0.3, 0.7])  # group 0 names phrase 0 best but holds no tokens
    assert matched_groups(table, mass, [0, 1], 0.0) == (0, 1)
    assert matched_groups(table, mass, [0, 1], 0.02) == (2, 1)
    # too few groups hold tokens for the phrases: all of them compete again
    assert matched_groups(table, np.array([0.0, 0.0, 1.0]), [0, 1], 0.02) == (0, 1)


def test_matching_losses_need_a_final_group_per_phrase(capsys):
    parse_args = tool("train_demo").parse_args
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--groups", "16,2", "--loo", "1"])
    assert "at least 3 final groups" in capsys.readouterr().err
    assert parse_args(["--out", "x", "--groups", "16,2"]).groups == "16,2"  # the shipped-style losses need none


def test_leave_one_out_rows_name_the_other_phrases():
    from types import SimpleNamespace

    train_demo = tool("train_demo")
    table = np.full((2, 4, 17), -5.0)  # 2 scenes, 4 groups, 16 phrases + nothing
    table[0, 2, 4], table[0, 1, 9] = 0.0, 0.0  # scene 0: group 2 names class 5 (index 4), group 1 class 10
    mass = np.full((2, 4), 0.25)
    scenes = [SimpleNamespace(class_ids=[5, 10]), SimpleNamespace(class_ids=[3])]  # scene 1 has one object: no row
    matches = [train_demo.matched_groups(table[i], mass[i], [k - 1 for k in sc.class_ids], 0.02)
               for i, sc in enumerate(scenes)]  # fmt: skip
    rows = train_demo.leave_one_out_rows(scenes, matches)
    assert rows.shape == (2, 18)
    assert rows[0, :2].tolist() == [0, 2] and np.flatnonzero(rows[0, 2:]).tolist() == [9]
    assert rows[1, :2].tolist() == [0, 1] and np.flatnonzero(rows[1, 2:]).tolist() == [4]


def test_shared_colour_batches_are_drawn_from_captions_and_repeat_on_resume():
    train_demo = tool("train_demo")
    from groupvit_np.tasks.scenes import make_scene

    assert train_demo.shares_colour((4, 1)) and not train_demo.shares_colour((1, 5, 9))  # red star + red circle
    plain = train_demo.parse_args(["--out", "x", "--batch", "8", "--seed", "1"])
    assert train_demo.train_seeds(3, plain).tolist() == list(range(1_000_024, 1_000_032))  # the shipped draw
    mixed = train_demo.parse_args(["--out", "x", "--batch", "8", "--seed", "1", "--shared-colour", "0.5"])
    seeds = train_demo.train_seeds(3, mixed)
    assert seeds[4:].tolist() == list(range(1_000_028, 1_000_032))  # the other half stays the natural draw
    shared = [make_scene(int(s)).class_ids for s in seeds[:4]]
    assert all(len({(k - 1) // 4 for k in ids}) < len(ids) for ids in shared), shared  # a colour twice in each
    assert all(1_500_000 <= s < 20_000_000 for s in seeds[:4])  # training seeds, apart from the plain slots
    assert train_demo.train_seeds(3, mixed).tolist() == seeds.tolist()  # a function of (seed, step)


def test_where_rivals_and_loss_ask_each_placed_phrase_for_its_own_word():
    torch = pytest.importorskip("torch")
    train_demo = tool("train_demo")
    from groupvit_np.tasks.scenes import Scene

    mask = np.zeros((64, 64), dtype=np.int64)
    mask[5:15, 40:50], mask[30:40, 20:30], mask[8:18, 2:12] = 16, 2, 13  # yellow star right, red square, circle left
    scene = Scene(image=np.zeros((64, 64, 3), np.uint8), mask=mask, class_ids=(16, 2, 13), caption="")
    lone = Scene(image=np.zeros((64, 64, 3), np.uint8), mask=(mask == 2) * 2, class_ids=(2,), caption="")
    rivals = train_demo.where_rivals([lone, scene])
    assert rivals == [(1, 0, ["a left yellow star", "a right yellow star"], 1),
                      (1, 2, ["a left yellow circle", "a right yellow circle"], 0)]  # fmt: skip
    # group embeddings [B=2, S=3, P=2] and variant texts [V=4, P=2]; scene 1's phrases matched to groups 2, 0, 1
    grp = torch.tensor([[[1.0, 0.0]] * 3, [[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]]])
    var = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    matches = [(0,), (2, 0, 1)]
    # star: group 2 scores (0.6, 0.8) for (left, right), right is its word; circle: group 1 scores (1, 0), left
    expected = (np.log1p(np.exp(-2 * 0.2)) + np.log1p(np.exp(-2 * 1.0))) / 2
    got = train_demo.where_loss(torch.tensor(2.0), grp, var, rivals, matches)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(train_demo.where_loss(torch.tensor(2.0), grp, var, [], matches)) == 0.0  # no repeated colour


def test_order_pairs_and_loss_read_the_position_words_on_the_token_grid():
    torch = pytest.importorskip("torch")
    train_demo = tool("train_demo")
    from groupvit_np.tasks.scenes import Scene

    def scene(objects):
        mask = np.zeros((64, 64), dtype=np.int64)
        for k, (rows, cols) in objects.items():
            mask[rows, cols] = k
        return Scene(image=np.zeros((64, 64, 3), np.uint8), mask=mask, class_ids=tuple(objects), caption="")

    # yellow star (16) right of yellow circle (13); three blue objects (9, 10, 11) top to bottom; red alone
    pairs = train_demo.order_pairs([
        scene({16: (slice(5, 15), slice(40, 50)), 2: (slice(30, 40), slice(20, 30)), 13: (slice(8, 18), slice(2, 12))}),
        scene({1: (slice(0, 9), slice(0, 9))}),
        scene({11: (slice(50, 60), slice(2, 10)), 9: (slice(0, 8), slice(0, 8)), 10: (slice(25, 33), slice(4, 12))}),
    ])  # fmt: skip
    assert pairs == [(0, 12, 15, 1), (2, 8, 9, 0), (2, 9, 10, 0)]  # class indices: "left" first, "top" first
    # a 2 x 2 token grid (centres at 0.25 and 0.75 of the side); phrase 0 on the left column, phrase 1 on the right
    q = torch.zeros(1, 4, 3)
    q[0, [0, 2], 0], q[0, [1, 3], 1] = 1.0, 1.0
    assert float(train_demo.order_loss(q, [(0, 0, 1, 1)])) == pytest.approx(np.log1p(np.exp(-10.0)), rel=1e-4)
    assert float(train_demo.order_loss(q, [(0, 1, 0, 1)])) == pytest.approx(np.log1p(np.exp(10.0)), rel=1e-4)
    assert float(train_demo.order_loss(q, [(0, 0, 1, 0)])) == pytest.approx(np.log(2), rel=1e-4)  # same rows
    q[0, :, 0] = 1.0  # phrase 0 everywhere: its centroid is the middle, a quarter short of phrase 1's
    assert float(train_demo.order_loss(q, [(0, 0, 1, 1)])) == pytest.approx(np.log1p(np.exp(-5.0)), rel=1e-4)
    assert float(train_demo.order_loss(q, [])) == 0.0


def test_where_adds_position_words_to_the_tokenizer_and_keeps_known_rows(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    train_demo = tool("train_demo")
    plain = train_demo.parse_args(["--out", "x"])
    placed = train_demo.parse_args(["--out", "x", "--where", "1"])
    small, _ = train_demo.tokenizer_files(train_demo.caption_words(plain))
    big, _ = train_demo.tokenizer_files(train_demo.caption_words(placed))
    assert "left</w>" in big and "left</w>" not in small and len(big) > len(small)
    tok = train_demo.write_tokenizer(tmp_path, train_demo.caption_words(placed))
    ids = tok("a left yellow star")["input_ids"]
    assert ids == [big["<|startoftext|>"], big["a</w>"], big["left</w>"], big["yellow</w>"], big["star</w>"],
                   big["<|endoftext|>"]]  # fmt: skip
    # a run started from a plain one keeps every trained row, under the token's new id
    torch = pytest.importorskip("torch")
    trained = torch.arange(len(small), dtype=torch.float32)[:, None].repeat(1, 2)  # row i holds i
    fresh = torch.full((len(big), 2), -1.0)
    table = train_demo.carry_rows(fresh, trained, small, big)
    assert float(table[big["<|endoftext|>"], 0]) == small["<|endoftext|>"] != big["<|endoftext|>"]
    assert float(table[big["yellow</w>"], 1]) == small["yellow</w>"]
    assert float(table[big["left</w>"], 0]) == -1.0  # new: the fresh row
    assert int((table[:, 0] == -1.0).sum()) == len(set(big) - set(small))


def test_presence_loss_counts_the_best_twentieth_of_the_tokens():
    torch = pytest.importorskip("torch")
    presence_loss = tool("train_demo").presence_loss
    present = torch.tensor([[1.0, 0.0]])  # the caption names phrase 0, not phrase 1
    q = torch.zeros(1, 40, 3)  # 40 tokens: phrase 0, phrase 1, "nothing"
    q[0, :, 2] = 1.0
    q[0, :2] = torch.tensor([1.0, 0.0, 0.0])  # phrase 0 owns 2 tokens = 1/20 of them: fully present
    assert float(presence_loss(q, present)) < 1e-5
    q[0, 1] = torch.tensor([0.0, 0.0, 1.0])  # only 1 token: presence is the mean of the best 2, 0.5
    assert float(presence_loss(q, present)) == pytest.approx(np.log(2) / 3, rel=1e-4)  # one of 3 terms is -log 0.5


def test_log_before_keeps_what_a_state_covers(tmp_path):
    log_before = tool("train_demo").log_before
    lines = ['{"args": {}}', '{"step": 0, "loss": 3.0}', '{"step": 25, "loss": 2.0}', '{"resumed_at_step": 20}',
             '{"step": 50, "loss": 1.0}', '{"done": 60}']  # fmt: skip
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    assert log_before(tmp_path / "log.jsonl", 30) == [lines[0], lines[1], lines[2], lines[3], lines[5]]
    assert log_before(tmp_path / "log.jsonl", 25) == [lines[0], lines[1], lines[3], lines[5]]  # step 25 is redone


def test_eval_cli_scores():
    from groupvit_np.tasks.scenes import CLASS_NAMES, make_scenes

    scores = tool("eval_cli").scores
    _, gt, scenes = make_scenes(30_000_000 + np.arange(6))
    perfect = scores(gt, gt, scenes)
    assert perfect["fg_miou"] == 1.0 and perfect["object_vs_bg_iou"] == 1.0 and perfect["objects_named_right"] == 1.0
    assert perfect["objects"] == sum(len(s.class_ids) for s in scenes)
    # every object found but called the next class: masks perfect, names all wrong
    renamed = np.where(gt > 0, gt % 16 + 1, 0)
    wrong = scores(renamed, gt, scenes)
    assert wrong["object_vs_bg_iou"] == 1.0 and wrong["objects_named_right"] == 0.0 and wrong["fg_miou"] == 0.0
    # everything background: no object is named right (background counts as a label)
    none = scores(np.zeros_like(gt), gt, scenes)
    assert none["object_vs_bg_iou"] == 0.0 and none["objects_named_right"] == 0.0
    # named right apart by whether another object in its scene has the same colour (classes 1-4 are red, 5-8 green,
    # 9-12 blue): scene 0 a red and a green object; scene 1 two red ones and a blue one, one red painted background
    from types import SimpleNamespace

    assert [CLASS_NAMES[k - 1].split()[0] for k in (1, 2, 3, 5, 9)] == ["red", "red", "red", "green", "blue"]
    two = [SimpleNamespace(class_ids=(1, 5)), SimpleNamespace(class_ids=(2, 3, 9))]
    gt = np.zeros((2, 1, 3), np.int64)
    gt[0, 0, :2], gt[1, 0] = (1, 5), (2, 3, 9)
    pred = gt.copy()
    pred[1, 0, 0] = 0
    split = scores(pred, gt, two)
    assert split["objects_named_right"] == 0.8
    assert (split["objects_colour_unique"], split["named_right_colour_unique"]) == (3, 1.0)
    assert (split["objects_colour_shared"], split["named_right_colour_shared"]) == (2, 0.5)


def test_ship_demo_writes_the_shipped_settings_from_its_evaluation(tmp_path):
    """The shipped segmentation.json follows from the shipped evaluation: thresholds chosen on validation scenes,
    the method with the higher validation mIoU, the training statistics."""
    import json
    import shutil

    ship_demo = tool("ship_demo")
    shipped = Path(__file__).resolve().parents[1] / "weights" / "groupvit-demo-scenes"
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    shutil.copy(shipped / "eval-metrics.json", evaluation / "metrics.json")
    shutil.copy(shipped / "eval-segmentation.png", evaluation / "segmentation.png")
    settings = ship_demo.ship(shipped, evaluation, tmp_path / "out")
    expected = json.loads((shipped / "segmentation.json").read_text())
    for key in ("method", "image_size", "labels", "templates", "threshold_hf", "threshold_original", "image_mean",
                "image_std"):  # fmt: skip
        assert settings[key] == expected[key], key
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    assert (tmp_path / "out" / "eval-metrics.json").is_file() and not (tmp_path / "out" / "MODEL_CARD.md").exists()
    # the other method wins when it scores higher on the validation scenes
    metrics = json.loads((shipped / "eval-metrics.json").read_text())
    metrics["seg_original"]["val_fg_miou"] = metrics["seg_hf"]["val_fg_miou"] + 0.01
    preprocessor = json.loads((shipped / "preprocessor_config.json").read_text())
    assert ship_demo.segmentation_settings(metrics, preprocessor)["method"] == "original"


@pytest.mark.reference
@pytest.mark.slow
def test_interrupted_training_continues_bit_for_bit(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    base = [sys.executable, str(TOOLS / "train_demo.py"), "--smoke", "--threads", "1", "--eval-every", "5"]

    def train(out: Path, *extra: str) -> None:
        done = subprocess.run([*base, "--out", str(out), *extra], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]

    train(tmp_path / "straight")
    train(tmp_path / "resumed", "--stop-at", "4")
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # stopped as if killed, state.pt written
    train(tmp_path / "resumed", "--resume")
    straight = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == straight
    umask = os.umask(0o022)
    os.umask(umask)
    for f in (tmp_path / "straight").iterdir():  # written files follow the umask (0644 under 022), not 0600
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
    log = (tmp_path / "resumed" / "train_log.jsonl").read_text()
    assert '"resumed_at_step": 4' in log and '"done": 10' in log
    # a different recipe cannot resume the run
    refused = subprocess.run([*base, "--out", str(tmp_path / "resumed"), "--resume", "--lr", "0.01"],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 1 and "different recipe: --lr 0.001 (given 0.01)" in refused.stderr


def test_sincos_positions_are_smooth_unit_rows():
    table = tool("train_demo").sincos_positions(16, 96)  # [256, 96]
    assert table.shape == (256, 96)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, rtol=1e-12)
    # token (row 0, column 1): its row half is that of position 0 (sines 0, cosines 1), its column half position 1
    np.testing.assert_allclose(table[1, :48], np.r_[np.zeros(24), np.ones(24)] / np.sqrt(48), atol=1e-15)
    np.testing.assert_allclose(table[1, 48], np.sin(1.0) / np.sqrt(48), rtol=1e-12)  # frequency 1 rad per token
    np.testing.assert_allclose(table[16, :48], table[1, 48:])  # row 1, column 0 mirrors row 0, column 1
    cos = table @ table.T  # [256, 256]
    np.testing.assert_allclose(table[1, 48 + 23], np.sin(1 / 32) / np.sqrt(48), rtol=1e-12)  # the slowest
    assert cos[0, 1] > 0.95 and cos[0, 4] < 0.7 and abs(cos[0, 255]) < 0.1  # near tokens alike, far ones not
    np.testing.assert_allclose(tool("train_demo").sincos_positions(16, 96, 4.0), 4 * table, rtol=1e-12)


def test_same_colour_diagnosis_labels_tokens_and_scores_nearest_centroids():
    diag = tool("diag_same_colour")
    gt = np.zeros((1, 8, 8), np.int64)
    gt[0, :4, :5] = 5  # token (0, 0) all 5; token (0, 1): 4 of its 16 pixels 5, the rest background
    gt[0, 4:, 4:] = 9
    assert diag.token_labels(gt, 2).tolist() == [[5, 0, 0, 9]]
    feats = np.array([[0.0], [1.0], [8.0], [10.0]])  # [N, D]: token 2 sits nearer b's mean (10) than a's (3)
    a, b = np.array([1, 1, 1, 0], bool), np.array([0, 0, 0, 1], bool)
    assert diag.nearest_centroid(feats, a, b) == 0.75
