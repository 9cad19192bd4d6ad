"""CLIP tokenizer: helpers, a ladder of hand-checkable cases, laws, the golden HF fixture, and live HF parity.

Tokenisation is discrete, so every comparison here is exact (no tolerance): one differing id is a bug.
The golden fixture is HF 4.57.6's slow CLIPTokenizer (ftfy installed), written by tests/reference_tokenizer.py.
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from groupvit_np.preprocessing.bpe import bpe_merge, bytes_to_unicode, get_pairs
from groupvit_np.preprocessing.tokenizer import CLIPTokenizer
from groupvit_np.preprocessing.vocab import vocab_from_merges

sys.path.insert(0, str(Path(__file__).resolve().parent))
import clip_vocab  # noqa: E402
from tokenizer_corpus import all_texts, batch_cases, fuzz_texts  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tokenizer_golden.json.gz"
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer()  # the shipped bpe_simple_vocab_16e6.txt.gz


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(gzip.decompress(FIXTURE.read_bytes()))


# --- helpers -------------------------------------------------------------------------------------------------------
def test_bytes_to_unicode_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())  # BPE never sees a space or control
    assert table[ord("a")] == "a" and table[0x00] == "\u0100" and table[0x20] == "\u0120"  # "Ā", "Ġ"
    assert list(table)[:3] == [ord("!"), ord('"'), ord("#")]  # printables first: this order is the vocab's
    assert list(table.items()) == clip_vocab.byte_alphabet()  # the independent derivation, order included


def test_get_pairs_and_bpe_merge_worked_examples():
    assert get_pairs(("l", "o", "w</w>")) == {("l", "o"), ("o", "w</w>")}
    assert get_pairs(("a",)) == set()
    ranks = {("l", "o"): 0, ("lo", "w</w>"): 1}
    steps = []
    assert bpe_merge(["l", "o", "w</w>"], ranks, steps) == ["low</w>"]
    assert steps == [(("l", "o"), 0, ("lo", "w</w>")), (("lo", "w</w>"), 1, ("low</w>",))]
    # All occurrences merge left to right, without overlap: "aaa" -> "aa" + "a".
    assert bpe_merge(["a", "a", "a"], {("a", "a"): 0}) == ["aa", "a"]


def test_vocabulary_matches_clip(tok):
    assert tok.vocab_size == clip_vocab.PUBLIC_VOCAB_SIZE == 49408
    assert {t: tok.encoder[t] for t in clip_vocab.PUBLIC_IDS} == clip_vocab.PUBLIC_IDS  # ids stated in public
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (BOS, EOS, EOS, EOS)
    assert tok.decoder[0] == "!" and tok.decoder[256] == "!</w>" and tok.decoder[320] == "a</w>"
    assert tok.decoder[512] == "".join(next(iter(tok.bpe_ranks)))  # the first merge, "i n" -> "in"
    assert len(tok.bpe_ranks) == 49152 - 256 - 2
    # The published openai/clip-vit-base-patch32 vocab.json, serialised with sorted keys, is 951508 characters
    # (checked against a public copy, with ids spot-checked at both ends); a different derivation would not be.
    assert len(json.dumps(tok.encoder, sort_keys=True, ensure_ascii=False)) == 951508
    # The package's rule against the independent one (tests/clip_vocab.py), on the merges read independently too.
    merges = clip_vocab.clip_merges()
    assert tok.encoder == clip_vocab.clip_vocab(merges)
    assert list(tok.bpe_ranks) == [tuple(line.split(" ")) for line in merges]  # in rank order
    assert vocab_from_merges([tuple(line.split(" ")) for line in merges]) == tok.encoder
    assert tok.encode("a photo of a cat") == clip_vocab.A_PHOTO_OF_A_CAT


def test_shipped_checkpoint_tokenizer_files_are_clips():
    """The tiny checkpoint's vocab.json and merges.txt, byte for byte what the independent helper writes."""
    from groupvit_np._resources import data_dir

    folder = data_dir("weights") / "groupvit-tiny-random"
    for name, text in clip_vocab.hf_files().items():
        assert (folder / name).read_text(encoding="utf-8") == text, name


# --- ladder --------------------------------------------------------------------------------------------------------
LADDER = [
    # text, BPE pieces, ids without BOS/EOS, decode(skip_special_tokens=True)
    ("", [], [], ""),
    (" \t\n", [], [], ""),  # whitespace only: cleaned to nothing
    ("a", ["a</w>"], [320], "a"),  # byte "a" + end of word: 256 + 64
    ("A", ["a</w>"], [320], "a"),  # lowercased first
    ("é", ["Ã©</w>"], [4166], "é"),  # UTF-8 C3 A9 -> "Ã" "©", merged
    ("😀", ["ðŁĺĢ</w>"], [7334], "😀"),  # 4 bytes F0 9F 98 80, one merged token
    ("it's", ["it</w>", "'s</w>"], [585, 568], "it 's"),  # contractions split off; decode leaves the space
    ("it\u2019s", ["it</w>", "'s</w>"], [585, 568], "it 's"),  # ftfy straightens the curly apostrophe
    ("123", ["1</w>", "2</w>", "3</w>"], [272, 273, 274], "1 2 3"),  # one digit per pre-token
    ("a photo of a cat", ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"], [320, 1125, 539, 320, 2368],
     "a photo of a cat"),
    ("&amp;", ["&</w>"], [261], "&"),  # ftfy unescapes HTML entities
    ("<|endoftext|>", ["<|endoftext|>"], [EOS], ""),  # a special token written in the text stays special
    ("<|ENDOFTEXT|>", ["<|endoftext|>"], [EOS], ""),  # ... also in capitals: lowercased, then the regex keeps it
]  # fmt: skip


@pytest.mark.parametrize(("text", "pieces", "ids", "decoded"), LADDER, ids=[repr(c[0]) for c in LADDER])
def test_ladder(tok, text, pieces, ids, decoded):
    assert tok.tokenize(text) == pieces
    assert tok.encode(text) == [BOS, *ids, EOS]
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == decoded


def test_decode_keeps_special_tokens_glued_as_hf(tok):
    assert tok.decode([BOS, 320, 2368, EOS]) == "<|startoftext|>a cat <|endoftext|>"
    assert tok.decode(np.array([[BOS, 320, 2368, EOS]])) == "<|startoftext|>a cat <|endoftext|>"  # [1, L] works
    assert tok.decode([tok.encoder["Ã"]]) == "\ufffd"  # a lone UTF-8 lead byte decodes to U+FFFD
    assert tok.decode([320, 8], clean_up_tokenization_spaces=True) == "a )"  # HF's optional clean-up skips ")"
    assert tok.decode([320, 269], clean_up_tokenization_spaces=True) == "a."


# --- laws ----------------------------------------------------------------------------------------------------------
def test_decode_inverts_encode_on_clean_text(tok):
    # Words of letters separated by single spaces (lowercase, NFC) survive encode -> decode exactly: every
    # pre-token ends in "</w>", which decodes to one space, and the final one is stripped.
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz" * 3 + "éüßçñαβγжшяπ"
    texts = [" ".join("".join(rng.choice(letters) for _ in range(rng.randrange(1, 12))) for _ in range(8))
             for _ in range(200)]  # fmt: skip
    for text in texts:
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == text


def test_padding_and_mask_invariants(tok):
    texts = all_texts()[::7]
    enc = tok(texts, padding=True, truncation=True, return_tensors="np")
    ids, mask = enc.input_ids, enc.attention_mask
    assert ids.dtype == np.int64 and mask.dtype == np.int64 and ids.shape == mask.shape
    assert ids.shape == (len(texts), min(77, max(len(tok.encode(t)) for t in texts)))
    lengths = mask.sum(axis=1)
    assert np.all(ids[:, 0] == BOS) and np.all(ids[np.arange(len(texts)), lengths - 1] == EOS)
    assert np.all(np.diff(mask, axis=1) <= 0)  # ones then zeros: right padding
    assert np.all(ids[mask == 0] == EOS)  # pads are 49407
    for row, n, text in zip(ids, lengths, texts, strict=True):
        full = tok.encode(text)
        assert row[:n].tolist() == (full if len(full) <= 77 else [*full[:76], EOS])


def test_single_text_shapes_and_errors(tok):
    assert tok("a cat").input_ids == [BOS, 320, 2368, EOS]  # one text: flat lists, as HF
    assert tok("a cat", return_tensors="np").input_ids.shape == (1, 4)  # ... and [1, L] arrays
    assert tok("a cat", padding="max_length").input_ids[4:] == [EOS] * 73
    assert tok([], return_tensors="np").input_ids.shape == (0, 0)  # HF raises on an empty batch; we do not
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a cat"], return_tensors="np")  # HF 4.57.6 returns a ragged dtype=object array instead
    with pytest.raises(ValueError, match="return_tensors='pt'"):  # the message names the value refused
        tok("a", return_tensors="pt")
    with pytest.raises(ValueError, match="padding='left'"):
        tok("a", padding="left")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([49408])
    long = " ".join(["cat"] * 100)
    assert len(tok.encode(long)) == 102  # overlong without truncation: all ids, as HF (the model raises later)
    assert tok.encode(long, truncation=True) == [BOS, *[2368] * 75, EOS]


def test_trace_agrees_with_encode(tok):
    for text in all_texts()[::5]:
        trace = tok.trace(text)
        assert trace["tokens"] == tok.tokenize(text) and trace["ids"] == tok.encode(text)
        assert len(trace["pre_tokens"]) == len(trace["byte_mapped"]) == len(trace["merges"])
    trace = tok.trace("Lowest!")
    assert trace["cleaned"] == ["lowest!"] and trace["pre_tokens"] == ["lowest", "!"]
    # "lowest": s+t</w> (rank 33) first, then l+o, w+e, we+st</w>, lo+west</w>: each word_after is the next input.
    assert [rank for _, rank, _ in trace["merges"][0]] == [33, 37, 86, 1081, 11586]
    assert trace["merges"][0][-1][2] == ("lowest</w>",)


def test_memo_lives_on_the_instance(tok):
    fresh = CLIPTokenizer(tok.encoder, list(tok.bpe_ranks))
    fresh.encode("zyzzyva quokka")
    assert "quokka" in fresh._memo and "quokka" not in CLIPTokenizer(tok.encoder, list(tok.bpe_ranks))._memo


def test_save_and_load_round_trip(tok, tmp_path):
    paths = tok.save_pretrained(tmp_path)
    assert sorted(p.name for p in paths) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]  # fmt: skip
    back = CLIPTokenizer.from_pretrained(tmp_path)
    assert back.encoder == tok.encoder and back.bpe_ranks == tok.bpe_ranks and back.model_max_length == 77
    from groupvit_np._resources import data_dir, data_file

    for source in (data_dir("tokenizer"), data_file("tokenizer", "bpe_simple_vocab_16e6.txt.gz")):
        assert CLIPTokenizer.from_pretrained(source).encoder == tok.encoder
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        CLIPTokenizer.from_pretrained(tmp_path / "openai/clip-vit-base-patch32")


def test_package_does_not_import_torch_or_transformers():
    code = "import sys, groupvit_np.preprocessing.tokenizer as t; t.CLIPTokenizer()('a'); "
    code += "print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- golden HF fixture ---------------------------------------------------------------------------------------------
def test_fixture_covers_the_current_corpus(golden):
    assert golden["texts"] == all_texts() and len(golden["texts"]) >= 300
    cases = json.loads(json.dumps(batch_cases()))  # as stored: tuples become lists
    assert [[b["texts"], b["kwargs"]] for b in golden["batches"]] == cases


def test_corpus_matches_hf(tok, golden):
    for text, row in zip(golden["texts"], golden["rows"], strict=True):
        ids = tok.encode(text)
        assert tok.tokenize(text) == row["tokens"], text
        assert ids == row["ids"], text
        assert tok.decode(ids) == row["decode"], text
        assert tok.decode(ids, skip_special_tokens=True) == row["decode_skip"], text


def test_batches_match_hf(tok, golden):
    for case in golden["batches"]:
        enc = tok(case["texts"], **case["kwargs"])
        assert {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask} == {
            "input_ids": case["input_ids"], "attention_mask": case["attention_mask"]}, case["kwargs"]  # fmt: skip


def test_odd_id_sequences_decode_as_hf(tok, golden):
    for case in golden["decodes"]:
        assert tok.decode(case["ids"]) == case["decode"], case["ids"]
        assert tok.decode(case["ids"], skip_special_tokens=True) == case["decode_skip"], case["ids"]


# --- live HF -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("ftfy")
    from reference_tokenizer import hf_tokenizer

    return hf_tokenizer(tmp_path_factory.mktemp("hf-clip"))


@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:`max_length` is ignored")  # HF's own warning for padding=True + max_length
def test_fixture_is_what_hf_gives_now(hf, golden):
    from reference_tokenizer import golden as make_golden

    fresh = make_golden(hf)
    for key in ("texts", "rows", "batches", "decodes"):
        assert fresh[key] == golden[key], key


@pytest.mark.reference
def test_fuzz_matches_hf_live(tok, hf):
    for text in fuzz_texts(500, seed=0):
        ids = hf.encode(text)
        assert tok.tokenize(text) == hf.tokenize(text), repr(text)
        assert tok.encode(text) == ids, repr(text)
        assert tok.decode(ids) == hf.decode(ids), repr(text)
        assert tok.decode(ids, True, True) == hf.decode(ids, True, clean_up_tokenization_spaces=True), repr(text)


@pytest.mark.reference
def test_hf_on_the_independent_files_gives_the_public_ids(hf):
    assert hf.vocab_size == clip_vocab.PUBLIC_VOCAB_SIZE
    assert hf("a photo of a cat").input_ids == clip_vocab.A_PHOTO_OF_A_CAT
    assert hf.convert_tokens_to_ids(list(clip_vocab.PUBLIC_IDS)) == list(clip_vocab.PUBLIC_IDS.values())


@pytest.mark.reference
def test_transformers_reads_our_files(tok, hf, tmp_path):
    from reference_tokenizer import hf_from_pretrained

    tok.save_pretrained(tmp_path / "ours")
    hf.save_pretrained(tmp_path / "hf")
    for name in ("vocab.json", "merges.txt"):  # byte for byte what HF itself writes
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes()
    back = hf_from_pretrained(tmp_path / "ours")
    assert back.model_max_length == 77 and back.pad_token_id == EOS
    texts = all_texts()[::3]
    assert back(texts, padding=True, truncation=True).input_ids == tok(texts, padding=True, truncation=True).input_ids
    ours_again = CLIPTokenizer.from_pretrained(tmp_path / "hf")  # and we read HF's, configs included
    assert ours_again.encoder == tok.encoder and ours_again.model_max_length == 77


# --- HF's container methods; wrong input types (issue 13) ---------------------------------------------------------
def test_len_and_get_vocab_as_hf(tok):
    assert len(tok) == tok.vocab_size == 49408
    vocab = tok.get_vocab()
    assert vocab["cat</w>"] == 2368 and vocab["<|endoftext|>"] == 49407 and len(vocab) == 49408
    vocab["cat</w>"] = 0  # a copy: the tokenizer is unchanged
    assert tok("cat").input_ids == [49406, 2368, 49407]


@pytest.mark.parametrize(
    ("text", "got"),
    [(None, "got NoneType"), (3, "got int"), (["a", None], "got a list holding str, NoneType"), (b"a", "got bytes")],
)
def test_wrong_input_types_say_what_was_given(tok, text, got):
    with pytest.raises(TypeError, match=f"takes a string or a list of strings, {got}"):
        tok(text)


def test_words_not_in_vocab():
    from groupvit_np._resources import data_dir

    demo = CLIPTokenizer.from_pretrained(data_dir("weights") / "groupvit-demo-scenes")  # a word vocabulary
    assert demo.words_not_in_vocab("a red circle") == []
    assert demo.words_not_in_vocab("A Cat, on a SOFA") == ["cat", "on", "sofa"]  # cleaned first; "," is a token
