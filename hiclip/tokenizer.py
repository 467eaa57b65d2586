"""Tokenizer: word-level (default, one word = one token), BPE, or a pretrained CLIP's, on ``tokenizers``.

Words are the whitespace-separated tokens of the input (or the items of a pre-split list);
they are lower-cased. Every sequence is ``[SOT] tokens... [EOT]`` followed by ``[PAD]`` (id 0).
``word_ids`` maps each token to the index of the word it comes from (-1 for SOT/EOT/PAD), which is
what the model needs to read word-level links out of subword tokens.

The ``"clip"`` kind carries a pretrained vocabulary with its own special ids (CLIP's byte-level
BPE with ``</w>`` word ends, SOT ``<|startoftext|>``, EOT = PAD = UNK ``<|endoftext|>``, no mask
token), or a vocabulary exported by ``hiclip export-hf``. It tokenises the raw text exactly as
``transformers.CLIPTokenizer`` does (the file's normaliser, pre-tokeniser and model: NFC,
whitespace runs to one space, lower-casing, CLIP's regex split, byte-level BPE) and truncates like
it (the first ``context_length - 2`` pieces, then EOT). Word ids map each piece to the
whitespace word it came from, through the pieces' character offsets, so the pieces of one word
(``don't`` -> ``don``, ``'``, ``t</w>``) share its word id. Its special ids are read from the
file itself: SOT and EOT from the post-processor, PAD from the padding settings, UNK from the
model, the mask token from a special added token named ``<|mask|>``, ``[MASK]`` or ``<mask>``.
"""
from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from hiclip.errors import HiCLIPError

SPECIAL_TOKENS = ("[PAD]", "[SOT]", "[EOT]", "[UNK]", "[MASK]")
DEFAULT_CONTEXT_LENGTH = 77
#: Marks a BPE piece that continues a word (as WordPiece does), so ids decode back to words.
SUBWORD_PREFIX = "##"
#: The mask token :meth:`HiCLIPTokenizer.with_mask_token` adds to a pretrained vocabulary.
MASK_TOKEN = "<|mask|>"
_MASK_NAMES = (MASK_TOKEN, "[MASK]", "<mask>")
#: What :meth:`HiCLIPTokenizer.__call__` does with a text over the context length.
OVERFLOW_RULES = ("error", "truncate")


#: How :func:`split_words` turns raw text into words.
WORD_SPLITS = ("whitespace", "treebank")


def split_words(text: str, style: str = "whitespace") -> list[str]:
    """The words of a raw sentence: split on whitespace (text already tokenised), or
    (``"treebank"``) lower-cased and split as the Penn Treebank does, with nltk's
    ``TreebankWordTokenizer`` (no downloaded data): punctuation and clitics are words of their own
    (``"Dogs, in the park."`` -> ``dogs , in the park .``; ``"don't"`` -> ``do n't``) and double
    quotes become ``` `` ``` / ``''``. The text is one sentence: as in the treebank tokenizer, only
    a period at its very end is split off. The tokenizer lower-cases every word anyway; doing it first
    here is what the shipped caption corpus did.
    """
    if style == "whitespace":
        return text.split()
    if style == "treebank":
        from nltk.tokenize import TreebankWordTokenizer

        return TreebankWordTokenizer().tokenize(text.lower())
    raise HiCLIPError(f"word split {style!r} is not one of {list(WORD_SPLITS)}")


class TextTooLong(HiCLIPError):
    """A text has more tokens than the context length allows (``overflow="error"``).

    ``index`` is the text's position in the batch, so a caller that knows where the text came
    from can re-raise with its file and line (:meth:`located`).
    """

    def __init__(self, index: int, n_tokens: int, limit: int) -> None:
        self.index, self.n_tokens, self.limit = index, n_tokens, limit
        super().__init__(self.describe())

    def describe(self) -> str:
        return (f"{self.n_tokens} tokens with SOT and EOT, over the limit of {self.limit} (the context "
                "length of learned positions; a model with sinusoidal positions takes any length)")

    def located(self, where: str) -> HiCLIPError:
        """The same error as ``WHERE: ...`` (e.g. ``caps.txt:12``)."""
        return HiCLIPError(f"{where}: {self.describe()}")


def over_model_limit(where: str, n_tokens: int, limit: int, more: str = "") -> HiCLIPError:
    """The one-line error for a text over a model's limit: ``WHERE: N tokens with SOT and EOT,
    over the model's limit of L (its learned positions' context length[; MORE])``."""
    return HiCLIPError(f"{where}: {n_tokens} tokens with SOT and EOT, over the model's limit of {limit} "
                       f"(its learned positions' context length{'; ' + more if more else ''})")


@dataclass
class TextBatch:
    """A tokenised batch.

    Attributes
    ----------
    input_ids : Tensor, shape (B, T), long
        ``SOT ... EOT`` then PAD (id 0; a ``"clip"`` tokenizer's own pad id).
    attention_mask : Tensor, shape (B, T), bool
        True on SOT, tokens and EOT.
    word_ids : Tensor, shape (B, T), long
        Word index of each token; -1 for SOT/EOT/PAD (and, ``"clip"`` kind, for the pieces of a
        word cut by truncation).
    n_words : Tensor, shape (B,), long
        Number of words that fit in the context (whole words only; all of them unless the call
        asked for ``overflow="truncate"``).
    words : list of list of str
        The lower-cased words that fit, per sequence.
    n_tokens : list of int
        Tokens of each whole text, SOT and EOT included, before any truncation.
    n_unknown : list of int
        Words of each text (all of them, not only those that fit) with a piece outside the
        vocabulary (``[UNK]``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_ids: torch.Tensor
    n_words: torch.Tensor
    words: list[list[str]]
    n_tokens: list[int] = field(default_factory=list)
    n_unknown: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    @property
    def n_truncated(self) -> int:
        """Texts of the batch cut to the context length (``overflow="truncate"`` only)."""
        return sum(self.truncated)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "TextBatch":
        """The same batch with its tensors on ``device``."""
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device), self.word_ids.to(device),
                         self.n_words.to(device), self.words, self.n_tokens, self.n_unknown, self.truncated)


def _base_tokenizer(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def _text_iterator(texts: Iterable[str | Sequence[str]]) -> Iterable[str]:
    for text in texts:
        yield text if isinstance(text, str) else " ".join(text)


class HiCLIPTokenizer:
    """Word-level or BPE tokenizer with the special tokens ``[PAD]=0, [SOT], [EOT], [UNK], [MASK]``,
    or (kind ``"clip"``) a pretrained tokenizer with its own special ids (module docstring).

    Build with :meth:`train_word_level`, :meth:`train_bpe`, :meth:`from_pretrained_parts` or
    :meth:`from_file`.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        Without a post-processor: must contain the five special tokens, ``[PAD]`` with id 0.
        With one (``"clip"`` kind): it adds SOT/EOT; the special ids are read from the file.
    context_length : int or None
        Default maximum sequence length (SOT and EOT included); ``None``: no limit (for a model
        with sinusoidal or no positions, ``TextConfig.max_tokens``).
    """

    def __init__(self, tokenizer: Tokenizer, context_length: int | None = DEFAULT_CONTEXT_LENGTH,
                 where: str = "tokenizer") -> None:
        if context_length is not None and context_length < 3:
            raise HiCLIPError(f"{where}: context_length {context_length} leaves no room between SOT and EOT")
        self._tok = tokenizer
        self.context_length = None if context_length is None else int(context_length)
        tokenizer.no_truncation()  # this class does the cutting (or refusing) itself
        if tokenizer.post_processor is not None:
            self._kind = "clip"
            roles = _pretrained_roles(tokenizer, where)
            self.sot_token_id, self.eot_token_id, self.pad_token_id, self.unk_token_id, self.mask_token_id = roles
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._end_of_word = getattr(tokenizer.model, "end_of_word_suffix", None) or ""
            return
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise HiCLIPError(f"{where}: special token(s) {missing} missing from the vocabulary")
        if tokenizer.token_to_id("[PAD]") != 0:
            raise HiCLIPError(f"{where}: [PAD] must have id 0, has {tokenizer.token_to_id('[PAD]')}")
        self._kind = "bpe" if isinstance(tokenizer.model, models.BPE) else "word_level"
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
    def from_file(cls, path: str | Path, context_length: int | None | Literal["stored"] = "stored"
                  ) -> "HiCLIPTokenizer":
        """Load a tokenizer written by :meth:`save` (``path`` is the ``tokenizer.json`` file).

        The default context length is the one stored in the file (none stored: no limit) unless
        ``context_length`` is given (an int, or ``None`` for no limit).
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
        context = stored.get("max_length") if context_length == "stored" else context_length
        return cls(tok, context, where=str(path))

    @classmethod
    def from_pretrained_parts(cls, tokenizer: Tokenizer, sot_token: str, eot_token: str,
                              pad_token: str | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH,
                              where: str = "tokenizer") -> "HiCLIPTokenizer":
        """A ``"clip"`` tokenizer from a pretrained ``tokenizers.Tokenizer`` (e.g. the backend of
        ``transformers.CLIPTokenizer``) and the names of its special tokens.

        A copy is taken. Its post-processor is kept when it adds exactly ``sot_token`` and
        ``eot_token`` (CLIP's ``RobertaProcessing``), else replaced by ``SOT $A EOT``; the pad
        token (default: ``eot_token``, CLIP's convention) is recorded in its padding settings.
        """
        tok = Tokenizer.from_str(tokenizer.to_str())
        ids = {}
        for name in (sot_token, eot_token, pad_token or eot_token):
            token_id = tok.token_to_id(name)
            if token_id is None:
                raise HiCLIPError(f"{where}: special token {name!r} is not in the vocabulary")
            ids[name] = token_id
        try:
            current = _pretrained_roles(tok, where)[:2] if tok.post_processor is not None else None
        except HiCLIPError:
            current = None
        if current != (ids[sot_token], ids[eot_token]):
            tok.post_processor = processors.TemplateProcessing(
                single=f"{sot_token} $A {eot_token}",
                special_tokens=[(sot_token, ids[sot_token]), (eot_token, ids[eot_token])])
        pad = pad_token or eot_token
        tok.enable_padding(pad_id=ids[pad], pad_token=pad)
        return cls(tok, context_length, where)

    def with_mask_token(self) -> "HiCLIPTokenizer":
        """This tokenizer, or (a ``"clip"`` one without a mask token) a copy with :data:`MASK_TOKEN`
        added as a special token with the next free id (``vocab_size``)."""
        if self.mask_token_id is not None:
            return self
        tok = Tokenizer.from_str(self.to_json())
        tok.add_special_tokens([AddedToken(MASK_TOKEN, special=True, normalized=False)])
        return HiCLIPTokenizer(tok, self.context_length)

    def to_json(self) -> str:
        """The ``tokenizers`` JSON that :meth:`save` writes."""
        if self.context_length is not None:
            self._tok.enable_truncation(self.context_length)
        if self._kind == "clip":
            self._tok.enable_padding(pad_id=self.pad_token_id, pad_token=self._tok.id_to_token(self.pad_token_id))
        try:
            return self._tok.to_str(pretty=True)
        finally:
            self._tok.no_truncation()
            self._tok.no_padding()

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` (the ``tokenizers`` format; the default context length is
        stored in its ``truncation.max_length`` field, absent for no limit, a ``"clip"`` pad id in
        ``padding``)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    # properties -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def kind(self) -> str:
        """``"word_level"``, ``"bpe"`` or ``"clip"`` (a pretrained tokenizer, module docstring)."""
        return self._kind

    @property
    def special_token_ids(self) -> dict[str, int | None]:
        """Ids of the roles ``[PAD]``, ``[SOT]``, ``[EOT]``, ``[UNK]``, ``[MASK]`` (``None`` where a
        ``"clip"`` vocabulary has no such token; CLIP's EOT, PAD and UNK share one id)."""
        ids = (self.pad_token_id, self.sot_token_id, self.eot_token_id, self.unk_token_id, self.mask_token_id)
        return dict(zip(SPECIAL_TOKENS, ids))

    @property
    def regular_id_range(self) -> tuple[int, int]:
        """``[low, high)``: the longest run of ids holding no special token (MLM draws its random
        replacement tokens from it): ``[5, vocab_size)``, or CLIP's ``[0, 49406)``."""
        if self._kind != "clip":
            return len(SPECIAL_TOKENS), self.vocab_size
        added = json.loads(self._tok.to_str()).get("added_tokens") or []
        special = {t["id"] for t in added if t.get("special")}
        special |= {i for i in self.special_token_ids.values() if i is not None}
        edges = [-1, *sorted(special), self.vocab_size]
        low, high = max(zip(edges, edges[1:]), key=lambda pair: pair[1] - pair[0])
        return low + 1, high

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
                 pad_to_context: bool = False, overflow: str = "error") -> TextBatch:
        """Tokenise a batch.

        Parameters
        ----------
        texts : list of str or list of lists of words
            A string is split on whitespace; a list gives the words directly.
        context_length : int, optional
            Maximum length with SOT and EOT (default ``self.context_length``; both None: no limit).
        pad_to_context : bool
            Pad to ``context_length`` instead of to the longest sequence of the batch (no limit:
            to the longest).
        overflow : str
            A text over the limit: ``"error"`` (default) raises :class:`TextTooLong` naming the
            text's index; ``"truncate"`` drops the words that do not fit whole (EOT is always
            kept; ``n_words`` counts those that fit, ``truncated`` marks the text).

        Returns
        -------
        TextBatch
        """
        if overflow not in OVERFLOW_RULES:
            raise HiCLIPError(f"tokenizer: overflow {overflow!r} is not one of {list(OVERFLOW_RULES)}")
        context = context_length if context_length is not None else self.context_length
        if context is not None and context < 3:
            raise HiCLIPError(f"tokenizer: context_length {context} leaves no room between SOT and EOT")
        budget = None if context is None else int(context) - 2
        word_lists = self._split(texts)
        if self._kind == "clip":
            rows, kept_words, counts = self._encode_raw(texts, word_lists, budget, overflow)
            return self._batch(rows, kept_words, context, pad_to_context, counts)
        encodings = self._tok.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=False)
        rows: list[tuple[list[int], list[int]]] = []
        kept_words: list[list[str]] = []
        counts: list[tuple[int, int]] = []
        for i, (words, enc) in enumerate(zip(word_lists, encodings)):
            ids, wids = list(enc.ids), list(enc.word_ids)
            if sorted(set(wids)) != list(range(len(words))) or any(w is None for w in wids):
                raise HiCLIPError(f"tokenizer: text {i} could not be aligned to its {len(words)} words")
            counts.append((len(ids) + 2, len({w for t, w in zip(ids, wids) if t == self.unk_token_id})))
            if budget is not None and len(ids) > budget:
                if overflow == "error":
                    raise TextTooLong(i, len(ids) + 2, budget + 2)
                cut = budget
                while cut > 0 and wids[cut] == wids[cut - 1]:
                    cut -= 1  # do not keep part of a word
                ids, wids = ids[:cut], wids[:cut]
            n = wids[-1] + 1 if wids else 0
            rows.append(([self.sot_token_id] + ids + [self.eot_token_id], [-1] + wids + [-1]))
            kept_words.append([w.lower() for w in words[:n]])
        return self._batch(rows, kept_words, context, pad_to_context, counts)

    def over_limit(self, texts: Sequence[str | Sequence[str]], context_length: int | None,
                   batch_size: int = 1024) -> list[tuple[int, int]]:
        """``(index, n_tokens)`` of the texts with more tokens (SOT and EOT included) than
        ``context_length``, a model's limit (``config.text.max_tokens``); none when it is ``None``
        (no limit: sinusoidal or no positions)."""
        if context_length is None:
            return []
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self(list(texts[start:start + batch_size]), context_length=context_length, overflow="truncate")
            out.extend((start + i, n) for i, n in enumerate(batch.n_tokens) if n > context_length)
        return out

    def _encode_raw(self, texts: Sequence[str | Sequence[str]], word_lists: list[list[str]],
                    budget: int | None, overflow: str
                    ) -> tuple[list[tuple[list[int], list[int]]], list[list[str]], list[tuple[int, int]]]:
        """``"clip"`` kind: encode each raw text (a word list joined by spaces) as CLIP does, and
        give each piece the index of the whitespace word its first character lies in."""
        strings = [text if isinstance(text, str) else " ".join(words) for text, words in zip(texts, word_lists)]
        specials = [t for t in (self._tok.id_to_token(self.sot_token_id), self._tok.id_to_token(self.eot_token_id)) if t]
        for i, text in enumerate(strings):
            for token in specials:
                if token in text:
                    raise HiCLIPError(f"tokenizer: text {i} contains the special token {token!r}")
        rows: list[tuple[list[int], list[int]]] = []
        kept_words: list[list[str]] = []
        counts: list[tuple[int, int]] = []
        for i, (text, enc) in enumerate(zip(strings, self._tok.encode_batch(strings, add_special_tokens=False))):
            spans = [m.span() for m in re.finditer(r"\S+", text)]
            starts = [a for a, _ in spans]
            wids = []
            for a, _ in enc.offsets:
                w = bisect_right(starts, a) - 1
                if w < 0 or a >= spans[w][1]:
                    raise HiCLIPError(f"tokenizer: text {i} could not be aligned to its {len(spans)} words")
                wids.append(w)
            if sorted(set(wids)) != list(range(len(spans))):
                raise HiCLIPError(f"tokenizer: text {i} could not be aligned to its {len(spans)} words")
            ids = list(enc.ids)
            unknown = {w for t, w in zip(ids, wids) if t == self.unk_token_id} if self.unk_token_id is not None else set()
            counts.append((len(ids) + 2, len(unknown)))
            if budget is not None and len(ids) > budget:  # CLIP keeps the first pieces; a word cut short is no word
                if overflow == "error":
                    raise TextTooLong(i, len(ids) + 2, budget + 2)
                cut_word = wids[budget] if wids[budget] == wids[budget - 1] else -2
                ids = ids[:budget]
                wids = [-1 if w == cut_word else w for w in wids[:budget]]
            n = max(wids, default=-1) + 1
            rows.append(([self.sot_token_id] + ids + [self.eot_token_id], [-1] + wids + [-1]))
            kept_words.append([text[a:b].lower() for a, b in spans[:n]])
        return rows, kept_words, counts

    def _batch(self, rows: list[tuple[list[int], list[int]]], kept_words: list[list[str]], context: int | None,
               pad_to_context: bool, counts: list[tuple[int, int]]) -> TextBatch:
        longest = max(len(r[0]) for r in rows) if rows else 2
        T = context if pad_to_context and context is not None else longest
        input_ids = torch.full((len(rows), T), self.pad_token_id, dtype=torch.long)
        word_ids = torch.full((len(rows), T), -1, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, (ids, wids) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            word_ids[i, : len(wids)] = torch.tensor(wids)
            attention_mask[i, : len(ids)] = True
        n_words = torch.tensor([len(w) for w in kept_words], dtype=torch.long)
        return TextBatch(input_ids, attention_mask, word_ids, n_words, kept_words,
                         [n for n, _ in counts], [u for _, u in counts],
                         [len(ids) < n for (ids, _), (n, _) in zip(rows, counts)])

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Token ids back to lower-cased text; BPE pieces are glued back into words."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        specials = {self.pad_token_id, self.sot_token_id, self.eot_token_id}
        if self._kind == "clip":
            kept = [i for i in ids if not (skip_special_tokens and i in specials)]
            text = self._tok.decode(kept, skip_special_tokens=False)
            if self._end_of_word:
                text = text.replace(self._end_of_word, " ")
            return " ".join(text.split())
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


def _pretrained_roles(tok: Tokenizer, where: str) -> tuple[int, int, int, int | None, int | None]:
    """``(sot, eot, pad, unk, mask)`` ids of a ``"clip"`` tokenizer, read from its JSON
    (module docstring); ``unk`` and ``mask`` may be None."""
    data: dict[str, Any] = json.loads(tok.to_str())
    post = data.get("post_processor") or {}
    kind = post.get("type")
    if kind in ("RobertaProcessing", "BertProcessing"):
        sot, eot = int(post["cls"][1]), int(post["sep"][1])
    elif kind == "TemplateProcessing":
        single = post.get("single") or []
        names = [next(iter(piece.values()))["id"] for piece in single]
        if len(single) != 3 or "SpecialToken" not in single[0] or "Sequence" not in single[1] \
                or "SpecialToken" not in single[2]:
            raise HiCLIPError(f"{where}: the post-processor's template {names} is not 'SOT $A EOT'")
        table = post.get("special_tokens") or {}
        try:
            sot, eot = (int(table[name]["ids"][0]) for name in (names[0], names[2]))
        except (KeyError, IndexError):
            raise HiCLIPError(f"{where}: the post-processor's special tokens {names[0]!r}, {names[2]!r} "
                              "have no ids") from None
    else:
        raise HiCLIPError(f"{where}: post-processor {kind!r} is not supported (expected one that adds "
                          "a start and an end token, as CLIP's RobertaProcessing or a template 'SOT $A EOT')")
    padding = data.get("padding") or {}
    pad = int(padding.get("pad_id", eot)) if padding else eot
    unk_name = (data.get("model") or {}).get("unk_token")
    unk = tok.token_to_id(unk_name) if unk_name else None
    named = {t["content"]: t["id"] for t in data.get("added_tokens") or [] if t.get("special")}
    mask = next((named[name] for name in _MASK_NAMES if name in named), None)
    size = tok.get_vocab_size(with_added_tokens=True)
    for role, token_id in (("SOT", sot), ("EOT", eot), ("PAD", pad)):
        if not 0 <= token_id < size:
            raise HiCLIPError(f"{where}: {role} id {token_id} is outside the vocabulary of {size}")
    return sot, eot, pad, unk, mask
