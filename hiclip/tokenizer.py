"""Tokenizer: word-level (default, one word = one token) or BPE, built on ``tokenizers``.

Words are the whitespace-separated tokens of the input (or the items of a pre-split list);
they are lower-cased. Every sequence is ``[SOT] tokens... [EOT]`` followed by ``[PAD]`` (id 0).
``word_ids`` maps each token to the index of the word it comes from (-1 for SOT/EOT/PAD), which is
what the model needs to read word-level links out of subword tokens.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from hiclip.errors import HiCLIPError

SPECIAL_TOKENS = ("[PAD]", "[SOT]", "[EOT]", "[UNK]", "[MASK]")
DEFAULT_CONTEXT_LENGTH = 77
#: Marks a BPE piece that continues a word (as WordPiece does), so ids decode back to words.
SUBWORD_PREFIX = "##"


@dataclass
class TextBatch:
    """A tokenised batch.

    Attributes
    ----------
    input_ids : Tensor, shape (B, T), long
        ``SOT ... EOT`` then ``PAD = 0``.
    attention_mask : Tensor, shape (B, T), bool
        True on SOT, tokens and EOT.
    word_ids : Tensor, shape (B, T), long
        Word index of each token; -1 for SOT/EOT/PAD.
    n_words : Tensor, shape (B,), long
        Number of words that fit in the context (whole words only).
    words : list of list of str
        The lower-cased words that fit, per sequence.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_ids: torch.Tensor
    n_words: torch.Tensor
    words: list[list[str]]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "TextBatch":
        """The same batch with its tensors on ``device``."""
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device), self.word_ids.to(device),
                         self.n_words.to(device), self.words)


def _base_tokenizer(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def _text_iterator(texts: Iterable[str | Sequence[str]]) -> Iterable[str]:
    for text in texts:
        yield text if isinstance(text, str) else " ".join(text)


class HiCLIPTokenizer:
    """Word-level or BPE tokenizer with the special tokens ``[PAD]=0, [SOT], [EOT], [UNK], [MASK]``.

    Build with :meth:`train_word_level`, :meth:`train_bpe` or :meth:`from_file`.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        Must contain the five special tokens, ``[PAD]`` with id 0.
    context_length : int
        Default maximum sequence length (SOT and EOT included).
    """

    def __init__(self, tokenizer: Tokenizer, context_length: int = DEFAULT_CONTEXT_LENGTH, where: str = "tokenizer") -> None:
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise HiCLIPError(f"{where}: special token(s) {missing} missing from the vocabulary")
        if tokenizer.token_to_id("[PAD]") != 0:
            raise HiCLIPError(f"{where}: [PAD] must have id 0, has {tokenizer.token_to_id('[PAD]')}")
        if context_length < 3:
            raise HiCLIPError(f"{where}: context_length {context_length} leaves no room between SOT and EOT")
        self._tok = tokenizer
        self.context_length = int(context_length)
        self.pad_token_id = 0
        self.sot_token_id = tokenizer.token_to_id("[SOT]")
        self.eot_token_id = tokenizer.token_to_id("[EOT]")
        self.unk_token_id = tokenizer.token_to_id("[UNK]")
        self.mask_token_id = tokenizer.token_to_id("[MASK]")

    # construction -----------------------------------------------------------------------------
    @classmethod
    def train_word_level(cls, texts: Iterable[str | Sequence[str]], min_frequency: int = 1,
                         max_vocab: int | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH) -> "HiCLIPTokenizer":
        """One token per lower-cased whitespace word; rarer or unseen words map to ``[UNK]``.

        Parameters
        ----------
        texts : iterable of str or of lists of words
        min_frequency : int
            Words seen fewer times are left out of the vocabulary.
        max_vocab : int, optional
            Keep at most this many (most frequent) words, special tokens not counted.
        context_length : int
            Default maximum sequence length.
        """
        tok = _base_tokenizer(models.WordLevel(unk_token="[UNK]"))
        limit = 1 << 30 if max_vocab is None else int(max_vocab) + len(SPECIAL_TOKENS)
        trainer = trainers.WordLevelTrainer(vocab_size=limit, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        tok.train_from_iterator(_text_iterator(texts), trainer)
        return cls(tok, context_length)

    @classmethod
    def train_bpe(cls, texts: Iterable[str | Sequence[str]], vocab_size: int, min_frequency: int = 2,
                  context_length: int = DEFAULT_CONTEXT_LENGTH) -> "HiCLIPTokenizer":
        """Byte-pair encoding learnt within lower-cased whitespace words (pieces never cross words).

        ``vocab_size`` includes the special tokens.
        """
        if vocab_size <= len(SPECIAL_TOKENS):
            raise HiCLIPError(f"train_bpe: vocab_size {vocab_size} leaves no room beyond the special tokens")
        tok = _base_tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix=SUBWORD_PREFIX))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                      continuing_subword_prefix=SUBWORD_PREFIX)
        tok.train_from_iterator(_text_iterator(texts), trainer)
        return cls(tok, context_length)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int | None = None) -> "HiCLIPTokenizer":
        """Load a tokenizer written by :meth:`save` (``path`` is the ``tokenizer.json`` file).

        The default context length is taken from the file unless ``context_length`` is given.
        """
        path = Path(path)
        if not path.is_file():
            raise HiCLIPError(f"{path}: tokenizer file not found")
        try:
            text = path.read_text()
            stored = json.loads(text).get("truncation") or {}
            tok = Tokenizer.from_str(text)
        except json.JSONDecodeError as error:
            raise HiCLIPError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
        except Exception as error:  # tokenizers raises a bare Exception on a malformed file
            raise HiCLIPError(f"{path}: not a tokenizers JSON file ({str(error).splitlines()[0]})") from None
        tok.no_truncation()
        context = context_length or stored.get("max_length") or DEFAULT_CONTEXT_LENGTH
        return cls(tok, int(context), where=str(path))

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` (the ``tokenizers`` format; the default context length is
        stored in its ``truncation.max_length`` field)."""
        self._tok.enable_truncation(self.context_length)
        try:
            self._tok.save(str(path))
        finally:
            self._tok.no_truncation()

    # properties -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def kind(self) -> str:
        """``"word_level"`` or ``"bpe"``."""
        return "bpe" if isinstance(self._tok.model, models.BPE) else "word_level"

    @property
    def special_token_ids(self) -> dict[str, int]:
        """Ids of ``[PAD]``, ``[SOT]``, ``[EOT]``, ``[UNK]``, ``[MASK]``."""
        return {t: self._tok.token_to_id(t) for t in SPECIAL_TOKENS}

    def token_to_id(self, token: str) -> int | None:
        """Id of ``token`` or None."""
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Token string of ``token_id`` or None."""
        return self._tok.id_to_token(token_id)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"HiCLIPTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, context_length={self.context_length})"

    # encoding ---------------------------------------------------------------------------------
    def _split(self, texts: Sequence[str | Sequence[str]]) -> list[list[str]]:
        if isinstance(texts, str):
            raise HiCLIPError("tokenizer: pass a list of texts, not a single string")
        out = []
        for i, text in enumerate(texts):
            if isinstance(text, str):
                out.append(text.split())
                continue
            words = list(text)
            for j, word in enumerate(words):
                if not isinstance(word, str) or not word or any(c.isspace() for c in word):
                    raise HiCLIPError(f"tokenizer: text {i} word {j} ({word!r}) is empty, not a string "
                                      "or contains whitespace")
            out.append(words)
        return out

    def __call__(self, texts: Sequence[str | Sequence[str]], context_length: int | None = None,
                 pad_to_context: bool = False) -> TextBatch:
        """Tokenise a batch.

        Parameters
        ----------
        texts : list of str or list of lists of words
            A string is split on whitespace; a list gives the words directly.
        context_length : int, optional
            Maximum length with SOT and EOT (default ``self.context_length``). Words that do not
            fit whole are dropped (EOT is always kept) and ``n_words`` counts those that fit.
        pad_to_context : bool
            Pad to ``context_length`` instead of to the longest sequence of the batch.

        Returns
        -------
        TextBatch
        """
        context = int(context_length or self.context_length)
        if context < 3:
            raise HiCLIPError(f"tokenizer: context_length {context} leaves no room between SOT and EOT")
        word_lists = self._split(texts)
        encodings = self._tok.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=False)
        budget = context - 2
        rows: list[tuple[list[int], list[int]]] = []
        kept_words: list[list[str]] = []
        for i, (words, enc) in enumerate(zip(word_lists, encodings)):
            ids, wids = list(enc.ids), list(enc.word_ids)
            if sorted(set(wids)) != list(range(len(words))) or any(w is None for w in wids):
                raise HiCLIPError(f"tokenizer: text {i} could not be aligned to its {len(words)} words")
            if len(ids) > budget:
                cut = budget
                while cut > 0 and wids[cut] == wids[cut - 1]:
                    cut -= 1  # do not keep part of a word
                ids, wids = ids[:cut], wids[:cut]
            n = wids[-1] + 1 if wids else 0
            rows.append(([self.sot_token_id] + ids + [self.eot_token_id], [-1] + wids + [-1]))
            kept_words.append([w.lower() for w in words[:n]])
        T = context if pad_to_context else max(len(r[0]) for r in rows) if rows else 2
        input_ids = torch.zeros(len(rows), T, dtype=torch.long)
        word_ids = torch.full((len(rows), T), -1, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, (ids, wids) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            word_ids[i, : len(wids)] = torch.tensor(wids)
            attention_mask[i, : len(ids)] = True
        n_words = torch.tensor([len(w) for w in kept_words], dtype=torch.long)
        return TextBatch(input_ids, attention_mask, word_ids, n_words, kept_words)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Token ids back to lower-cased text; BPE pieces are glued back into words."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        specials = {self.pad_token_id, self.sot_token_id, self.eot_token_id}
        words: list[str] = []
        for i in ids:
            if skip_special_tokens and i in specials:
                continue
            token = self._tok.id_to_token(i) or "[UNK]"
            if self.kind == "bpe" and token.startswith(SUBWORD_PREFIX) and words:
                words[-1] += token[len(SUBWORD_PREFIX):]
            else:
                words.append(token)
        return " ".join(words)
