"""Tokenizer: word alignment (word-level and BPE), truncation, special ids, persistence."""
from __future__ import annotations

import pytest
import torch

from hiclip.errors import HiCLIPError
from hiclip.tokenizer import SPECIAL_TOKENS, HiCLIPTokenizer, TextTooLong

TEXTS = [
    "A red square to the left of two green triangles",
    "a blue circle above a red square",
    "two small yellow stars",
    "the unbelievably colourful rectangles",
] * 3


@pytest.fixture(scope="module")
def word_tok() -> HiCLIPTokenizer:
    return HiCLIPTokenizer.train_word_level(TEXTS, context_length=12)


@pytest.fixture(scope="module")
def bpe_tok() -> HiCLIPTokenizer:
    return HiCLIPTokenizer.train_bpe(TEXTS, vocab_size=60, context_length=24)


def test_special_ids(word_tok: HiCLIPTokenizer, bpe_tok: HiCLIPTokenizer) -> None:
    for tok in (word_tok, bpe_tok):
        ids = tok.special_token_ids
        assert list(ids) == list(SPECIAL_TOKENS) and ids["[PAD]"] == 0 == tok.pad_token_id
        assert sorted(ids.values()) == [0, 1, 2, 3, 4]
        assert tok.mask_token_id == ids["[MASK]"] and tok.sot_token_id == ids["[SOT]"]
    assert word_tok.kind == "word_level" and bpe_tok.kind == "bpe"
    # 19 distinct lower-cased words + 5 special tokens
    assert word_tok.vocab_size == 19 + 5


def test_word_level_one_token_per_word(word_tok: HiCLIPTokenizer) -> None:
    batch = word_tok(["A red square", "two Zebras   above"])
    assert batch.input_ids.shape == (2, 5)
    assert batch.input_ids[:, 0].tolist() == [word_tok.sot_token_id] * 2
    assert batch.input_ids[0, 4] == word_tok.eot_token_id and batch.input_ids[1, 4] == word_tok.eot_token_id
    assert batch.word_ids.tolist() == [[-1, 0, 1, 2, -1], [-1, 0, 1, 2, -1]]
    assert batch.n_words.tolist() == [3, 3]
    assert batch.words == [["a", "red", "square"], ["two", "zebras", "above"]]
    assert batch.input_ids[1, 2] == word_tok.unk_token_id  # out-of-vocabulary word
    assert batch.attention_mask.dtype == torch.bool and batch.attention_mask.all()
    assert word_tok.decode(batch.input_ids[0]) == "a red square"


def test_padding_and_pretokenized_input(word_tok: HiCLIPTokenizer) -> None:
    batch = word_tok([["Two", "stars"], "a red square to the left"])
    assert batch.input_ids.shape == (2, 8)
    assert batch.input_ids[0, 4:].tolist() == [0] * 4 and not batch.attention_mask[0, 4:].any()
    assert batch.word_ids[0].tolist() == [-1, 0, 1, -1, -1, -1, -1, -1]
    assert word_tok(["a"], pad_to_context=True).input_ids.shape == (1, 12)
    empty = word_tok([""])
    assert empty.input_ids.tolist() == [[word_tok.sot_token_id, word_tok.eot_token_id]]
    assert empty.n_words.tolist() == [0]


def test_truncation_keeps_eot_and_counts_whole_words(word_tok: HiCLIPTokenizer) -> None:
    batch = word_tok([TEXTS[0]], context_length=6, overflow="truncate")
    assert batch.input_ids.shape == (1, 6)
    assert batch.input_ids[0, -1] == word_tok.eot_token_id
    assert batch.n_words.tolist() == [4] and batch.words == [["a", "red", "square", "to"]]
    assert batch.truncated == [True] and batch.n_truncated == 1 and batch.n_tokens == [12]


def test_over_long_text_is_refused_by_default(word_tok: HiCLIPTokenizer) -> None:
    with pytest.raises(TextTooLong, match="12 tokens with SOT and EOT, over the limit of 6") as caught:
        word_tok(["a red square", TEXTS[0]], context_length=6)
    assert (caught.value.index, caught.value.n_tokens, caught.value.limit) == (1, 12, 6)
    assert str(caught.value.located("caps.txt:7")).startswith("caps.txt:7: 12 tokens")
    with pytest.raises(HiCLIPError, match="overflow 'cut'"):
        word_tok([TEXTS[0]], overflow="cut")
    fits = word_tok([TEXTS[0]], context_length=12)
    assert fits.truncated == [False] and fits.n_words.tolist() == [10]


def test_no_limit_takes_any_length_and_counts_unknown_words(word_tok: HiCLIPTokenizer, tmp_path) -> None:
    unlimited = HiCLIPTokenizer(_copy(word_tok), context_length=None)
    words = ("a red square zebra " * 50).split()
    batch = unlimited([words, "two quokkas and a wombat"])
    assert batch.n_words.tolist() == [200, 5] and batch.input_ids.shape == (2, 202)
    assert batch.n_tokens == [202, 7] and batch.n_unknown == [50, 3] and batch.n_truncated == 0
    assert unlimited([words], pad_to_context=True).input_ids.shape == (1, 202)
    path = tmp_path / "unlimited.json"
    unlimited.save(path)
    assert HiCLIPTokenizer.from_file(path).context_length is None
    assert HiCLIPTokenizer.from_file(path, context_length=40).context_length == 40


def _copy(tok: HiCLIPTokenizer):
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tok.to_json())
    copy.no_truncation()
    return copy


def test_bpe_word_alignment(bpe_tok: HiCLIPTokenizer) -> None:
    batch = bpe_tok(["the unbelievably colourful rectangles", "a red square"], context_length=64)
    wids = batch.word_ids[0]
    inner = wids[batch.attention_mask[0]][1:-1]
    assert inner.tolist() == sorted(inner.tolist())  # pieces come in word order
    assert set(inner.tolist()) == {0, 1, 2, 3} and len(inner) > 4  # some word was split into pieces
    assert batch.n_words.tolist() == [4, 3]
    assert bpe_tok.decode(batch.input_ids[0]) == "the unbelievably colourful rectangles"
    # pieces of a word are contiguous: the word id never returns once it changed
    changes = (inner[1:] != inner[:-1]).sum().item()
    assert changes == 3


def test_bpe_truncation_never_splits_a_word(bpe_tok: HiCLIPTokenizer) -> None:
    full = bpe_tok(["the unbelievably colourful rectangles"], context_length=64)
    pieces = full.word_ids[0][full.attention_mask[0]][1:-1]
    first_two = int((pieces <= 1).sum())
    # room for word 0, word 1 and part of word 2 only
    context = first_two + 2 + 1
    batch = bpe_tok(["the unbelievably colourful rectangles"], context_length=context, overflow="truncate")
    assert batch.n_words.tolist() == [2] and batch.words == [["the", "unbelievably"]]
    assert batch.input_ids.shape[1] == first_two + 2
    assert batch.input_ids[0, -1] == bpe_tok.eot_token_id


def test_bad_inputs(word_tok: HiCLIPTokenizer) -> None:
    with pytest.raises(HiCLIPError, match="list of texts"):
        word_tok("a red square")
    with pytest.raises(HiCLIPError, match="word 1"):
        word_tok([["a", ""]])
    with pytest.raises(HiCLIPError, match="whitespace"):
        word_tok([["a", "red square"]])
    with pytest.raises(HiCLIPError, match="context_length"):
        word_tok(["a"], context_length=2)
    with pytest.raises(HiCLIPError, match="vocab_size"):
        HiCLIPTokenizer.train_bpe(TEXTS, vocab_size=5)


def test_min_frequency_and_max_vocab() -> None:
    tok = HiCLIPTokenizer.train_word_level(["a a a b b c"], min_frequency=2)
    assert tok.vocab_size == 5 + 2 and tok.token_to_id("c") is None
    tok = HiCLIPTokenizer.train_word_level(["a a a b b c"], max_vocab=1)
    assert tok.vocab_size == 5 + 1 and tok.token_to_id("a") is not None


def test_save_and_load(tmp_path, word_tok: HiCLIPTokenizer, bpe_tok: HiCLIPTokenizer) -> None:
    for tok in (word_tok, bpe_tok):
        path = tmp_path / f"{tok.kind}.json"
        tok.save(path)
        again = HiCLIPTokenizer.from_file(path)
        assert again.kind == tok.kind and again.vocab_size == tok.vocab_size
        assert again.context_length == tok.context_length
        a, b = tok(TEXTS, overflow="truncate"), again(TEXTS, overflow="truncate")
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.word_ids, b.word_ids)
        assert HiCLIPTokenizer.from_file(path, context_length=50).context_length == 50
    with pytest.raises(HiCLIPError, match="not found"):
        HiCLIPTokenizer.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\n oops")
    with pytest.raises(HiCLIPError, match="bad.json:2: invalid JSON"):
        HiCLIPTokenizer.from_file(bad)
