"""The app's text analysis: typed captions split as treebanks are, and read whole or refused."""
from __future__ import annotations

import pytest
import torch

import hiclip
from hiclip.errors import HiCLIPError
from viz import analysis

WORDS = "a red square , next to two green triangles above the blue circle .".split()


def _model(positions: str):
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([" ".join(WORDS)],
                                                        context_length=32 if positions == "learned" else None)
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size, text={"positions": positions})
    return model.eval(), tokenizer


def test_typed_caption_is_split_as_the_treebank_does():
    model, tokenizer = _model("learned")
    text = analysis.analyse_text(model, tokenizer, "A red square, next to two zebras.", words="treebank")
    assert text.words == ["a", "red", "square", ",", "next", "to", "two", "zebras", "."]
    assert text.links.shape == (4, 8)
    plain = analysis.analyse_text(model, tokenizer, "A red square, next to two zebras.")
    assert plain.words == ["A", "red", "square,", "next", "to", "two", "zebras."]


@pytest.mark.parametrize("n_words", [31, 40, 77, 200])
def test_long_captions_are_refused_or_read_whole(n_words):
    caption = " ".join(WORDS[i % len(WORDS)] for i in range(n_words))
    model, tokenizer = _model("learned")
    with pytest.raises(HiCLIPError, match=rf"^the caption has {n_words + 2} tokens with SOT and EOT, over "
                                          "this model's limit of 32"):
        analysis.analyse_text(model, tokenizer, caption)
    kept, left_out = analysis.fitting_captions(model, tokenizer, ["a red square", caption])
    assert kept == ["a red square"] and left_out == 1
    model, tokenizer = _model("sinusoidal")
    text = analysis.analyse_text(model, tokenizer, caption)
    assert len(text.words) == n_words and text.links.shape == (4, n_words - 1)
    assert analysis.fitting_captions(model, tokenizer, ["a red square", caption]) == (["a red square", caption], 0)
    tree = text.parse("tree_transformer")
    assert tree.tree.leaves() == caption.split()
