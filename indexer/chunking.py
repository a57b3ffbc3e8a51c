"""Long documents split into chunks at natural boundaries, each within the model's token window.

A text is cut at paragraph breaks first; a paragraph longer than the budget at sentence breaks (and
single line breaks); a sentence longer than the budget between words; a word longer than the budget
between its tokens. The pieces (units) are then packed into chunks of at most `budget` tokens, counted
in the model's own tokens (the fast Rust tokenizer with offsets: one call a document).

Stable boundaries. Packing the units greedily from the start of the document would let an edit that
changes one paragraph's length move every later boundary, and so re-embed the rest of the document.
Instead the units are first grouped into segments by their content alone: a segment ends after a unit
whose XXH3-64 hash falls below a threshold proportional to its token count (so a segment holds about
`_SEGMENT_BUDGETS` budgets of tokens, whatever the unit sizes), and each segment is packed greedily from
its own start. An edit changes its own unit, so it can move boundaries only from its chunk to the end
of its segment; every other chunk keeps its text and so its content hash, and is not embedded again.
The price: a segment's last chunk is not full, so a document has somewhat more chunks than a greedy
packing would give it.

Overlap (`overlap` tokens, default 0): every chunk but a document's first starts with up to `overlap`
tokens of the text before it (from a word boundary), so that a passage cut by a boundary is whole in
at least one chunk. Units are packed to `budget - overlap` tokens so that a chunk with its overlap
still fits. The trade-off: about budget/(budget - overlap) times the chunks (vectors, embedding time),
and an edit near the end of a chunk also changes the next chunk's overlap, so it re-embeds one more.

The cheap path. A text that fits needs no tokenization when it provably fits: for a WordPiece
tokenizer with BERT's normalizer, every token covers at least one character of the normalized text,
and normalization maps a character to at most one character except those in `_EXPANDING` (Hangul
syllables decompose into 2-3 jamo, a few Indic vowel signs into two, ...; tests/unit/test_chunking.py
recomputes that set from the default model's normalizer). So a text of at most `budget` characters
with none of those has at most `budget` tokens. Other tokenizers (byte-level BPE can spend several
tokens on one character) always count.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xxhash

from .errors import IndexerError, ModelLoadError

__all__ = ["Chunker", "TokenCounter", "WordCounter", "load_token_counter", "make_chunker"]

# Characters that BERT's normalizer (NFD, accents stripped, lowercased) turns into more than one
# character; with any of them a text may have more tokens than characters. U+0130 (I with dot) is only
# here for a lowercasing normalizer that keeps accents.
_EXPANDING = re.compile(
    "[\u0130\u09cb-\u09cc\u0b4b-\u0b4c\u0b94\u0bca-\u0bcc\u0ccb\u0d4a-\u0d4c\u0ddc-\u0dde\u1b06\u1b08"
    "\u1b0a\u1b0c\u1b0e\u1b12\u1b40-\u1b41\uac00-\ud7a3\U0001134b-\U0001134c\U000114bc\U000114be"
    "\U000115ba-\U000115bb\U0001d15e-\U0001d164\U0001d1bb-\U0001d1c0]")

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A sentence ends at . ! ? or an ellipsis, perhaps followed by closing quotes or brackets, then
# whitespace; or at an ideographic full stop; a single line break ends a line of a list or of code.
_SENTENCE = re.compile(r"(?:(?<=[.!?\u2026])|(?<=[.!?\u2026][\"'\u201d\u2019)\]]))\s+"
                       r"|(?<=[\u3002\uff01\uff1f])\s*|\s*\n\s*")
_WORD = re.compile(r"\s+")
_LEVELS = (_PARAGRAPH, _SENTENCE, _WORD)
# A segment (packed on its own, see the module docstring) holds about this many budgets of tokens.
_SEGMENT_BUDGETS = 2.0
# Tokens kept free in a chunk for a tokenizer whose count of a piece depends on its context.
_MARGIN = 4


class TokenCounter(Protocol):
    """What a chunker needs of a tokenizer."""

    name: str
    # True when a text cut at whitespace has as many tokens as its pieces together (WordPiece after
    # BERT's pre-tokenizer, whitespace words): then a chunk's count in its document is its own count.
    context_free: bool
    # True when `fits_cheaply` may answer without tokenizing (see the module docstring).
    cheap: bool

    def offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Start and end character of every token of `text` (no special tokens), in order."""
        ...

    def offsets_many(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`offsets` of each text (a tokenizer may do them in one call)."""
        ...


class WordCounter:
    """Whitespace-separated words as tokens: the fake model's count (it has no tokenizer)."""

    name = "words"
    context_free = True
    cheap = True

    def offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        a = np.array(spans, dtype=np.int64).reshape(-1, 2)
        return a[:, 0], a[:, 1]

    def offsets_many(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.offsets(t) for t in texts]


class HFTokenCounter:
    """A Hugging Face fast tokenizer (tokenizer.json), offsets in characters of the original text."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.name = name
        model = type(tokenizer.model).__name__
        normalizer = type(tokenizer.normalizer).__name__ if tokenizer.normalizer is not None else None
        pre = type(tokenizer.pre_tokenizer).__name__ if tokenizer.pre_tokenizer is not None else None
        self.context_free = model == "WordPiece" and pre in ("BertPreTokenizer", "Whitespace")
        self.cheap = self.context_free and normalizer in ("BertNormalizer", None)
        post = tokenizer.post_processor
        self.specials = int(post.num_special_tokens_to_add(False)) if post is not None else 0

    def offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        return self.offsets_many([text])[0]

    def offsets_many(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        # One call for many texts: the Rust side works on them in parallel, without a round trip each.
        out = []
        for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False):
            a = np.array(enc.offsets, dtype=np.int64).reshape(-1, 2)
            out.append((a[:, 0], a[:, 1]))
        return out


class ApiTokenCounter:
    """An API model's tokens as its backend counts them (runners/_tokens.py): with a local
    tokenizer.json for the model where one is found offline, else by the estimate of one token per
    BYTES_PER_TOKEN_ESTIMATE UTF-8 bytes (which over-counts natural text, so chunks come out shorter
    than the limit; the backend cuts further the rare input the server still finds too long). A
    tiktoken encoding (no offsets) is counted by the estimate here."""

    context_free = False
    cheap = False

    def __init__(self, model: str) -> None:
        from .runners._tokens import token_counter

        counter = token_counter(model)
        self._hf: Any = getattr(counter, "tokenizer", None)  # a tokenizers.Tokenizer, or None
        self.name = counter.name if self._hf is not None else "estimate"
        self.specials = len(self._hf.encode("").ids) if self._hf is not None else 0

    def offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if self._hf is not None:
            a = np.array(self._hf.encode(text, add_special_tokens=False).offsets, dtype=np.int64)
            return a.reshape(-1, 2)[:, 0], a.reshape(-1, 2)[:, 1]
        from .runners._tokens import BYTES_PER_TOKEN_ESTIMATE

        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        utf8 = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
        char_bytes = np.concatenate(([0], np.cumsum(utf8)[:-1])).astype(np.int64)
        token_bytes = np.arange(0, int(utf8.sum()), BYTES_PER_TOKEN_ESTIMATE)
        starts = np.searchsorted(char_bytes, token_bytes, side="right") - 1
        return starts, np.append(starts[1:], len(text))

    def offsets_many(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.offsets(t) for t in texts]


def load_token_counter(model: str) -> HFTokenCounter:
    """The fast tokenizer of a sentence-transformers model, from its directory or the local cache only
    (the default model from its package): nothing is downloaded."""
    from tokenizers import Tokenizer

    from .embedders.sentence_transformers import resolve_model_path

    path = Path(resolve_model_path(model))
    try:
        if (path / "tokenizer.json").is_file():
            return HFTokenCounter(Tokenizer.from_file(str(path / "tokenizer.json")), model)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(model, local_files_only=True)
        return HFTokenCounter(hf.backend_tokenizer, model)
    except Exception as exc:
        raise ModelLoadError(f"model {model!r}: its fast tokenizer (tokenizer.json) could not be loaded to "
                             f"count tokens for chunking ({exc}); sync with --no-chunking to embed whole "
                             "documents, cut at the model's window") from exc


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    solo: bool = False  # a piece of a word cut between tokens: a chunk of its own (see _solo_pieces)


class Chunker:
    """Splits texts into chunk spans of at most `budget` tokens (see the module docstring).

    `load` gives the token counter and the budget on first use, so that a sync with nothing new, or
    gives it no new text, loads no tokenizer."""

    def __init__(self, load: Callable[[], tuple[TokenCounter, int]], overlap: int) -> None:
        self._load = load
        self.overlap = overlap
        self._counter: TokenCounter | None = None
        self._budget = 0

    def _ready(self) -> TokenCounter:
        if self._counter is None:
            counter, budget = self._load()
            if budget < 1:
                raise IndexerError(f"the chunk budget must be at least 1 token (got {budget})")
            if not 0 <= self.overlap <= budget // 2:
                raise IndexerError(f"--chunk-overlap {self.overlap}: give 0 to {budget // 2} tokens (at most "
                                   f"half of the chunk budget, {budget})")
            self._counter, self._budget = counter, budget
        return self._counter

    @property
    def counter(self) -> TokenCounter:
        return self._ready()

    @property
    def budget(self) -> int:
        self._ready()
        return self._budget

    def fits_cheaply(self, text: str) -> bool:
        counter = self._ready()
        return counter.cheap and len(text) <= self._budget and _EXPANDING.search(text) is None

    def _counted(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """The token offsets of each text that does not fit cheaply (None for those that do)."""
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(texts)
        need = [i for i, text in enumerate(texts) if not self.fits_cheaply(text)]
        if need:
            for i, found in zip(need, self.counter.offsets_many([texts[i] for i in need]), strict=True):
                out[i] = found
        return out

    def over_budget_many(self, texts: list[str]) -> list[bool]:
        """Whether each text has more tokens than the budget: embedded whole, it would be truncated."""
        return [found is not None and len(found[0]) > self._budget for found in self._counted(texts)]

    def over_budget(self, text: str) -> bool:
        return self.over_budget_many([text])[0]

    def split_many(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """`split` of each text, the texts that need counting tokenized in one call."""
        out = []
        for text, found in zip(texts, self._counted(texts), strict=True):
            if found is None or len(found[0]) <= self._budget:
                out.append([(0, len(text))])
            else:
                out.append(_Packing(self, text, *found).spans())
        return out

    def split(self, text: str) -> list[tuple[int, int]]:
        """Character spans (start, end) of the chunks of `text`, in order. A text that fits is one span,
        the whole text, so that it gets the very vector it gets unchunked."""
        return self.split_many([text])[0]


class _Packing:
    def __init__(self, chunker: Chunker, text: str, starts: np.ndarray, ends: np.ndarray) -> None:
        self.c = chunker
        self.text = text
        self.starts = starts.tolist()
        self.ends = ends.tolist()
        # Units are packed to this; overlap fills the rest. A count that depends on the context (a
        # leading space, a byte-level merge across a cut) may differ alone by a token or two: a margin.
        margin = 0 if chunker.counter.context_free else _MARGIN
        self.limit = max(1, chunker.budget - chunker.overlap - margin)

    def tokens(self, a: int, b: int) -> int:
        return bisect_left(self.starts, b) - bisect_left(self.starts, a)

    def units(self, a: int, b: int, level: int) -> Iterator[_Unit]:
        for s, e in _pieces(self.text, a, b, _LEVELS[level]):
            n = self.tokens(s, e)
            if n <= self.limit:
                if n:
                    yield _Unit(s, e, n)
            elif level + 1 < len(_LEVELS):
                yield from self.units(s, e, level + 1)
            else:
                yield from self._solo_pieces(s, e)

    def _solo_pieces(self, a: int, b: int) -> Iterator[_Unit]:
        """A word longer than the budget, cut between tokens. Such a piece tokenized alone may count
        differently (a word-piece continuation starts a word there), so it is checked alone and cut
        shorter until it fits: a chunk's text must fit the window by itself."""
        first = bisect_left(self.starts, a)
        last = bisect_left(self.starts, b)
        i = first
        while i < last:
            j = min(last, i + self.limit)
            while True:
                s, e = self.starts[i], (b if j == last else self.starts[j])
                n = len(self.c.counter.offsets(self.text[s:e])[0])
                if n <= self.limit or j == i + 1:
                    break
                j = i + max(1, (j - i) * self.limit // n - 1)
            yield _Unit(s, e, n, solo=True)
            i = j

    def spans(self) -> list[tuple[int, int]]:
        units = list(self.units(0, len(self.text), 0))
        chunks: list[tuple[int, int, bool]] = []  # start, end, solo
        cut_scale = 2.0**64 / (_SEGMENT_BUDGETS * self.limit)
        current: list[_Unit] = []
        size = 0

        def close() -> None:
            nonlocal current, size
            if current:
                chunks.append((current[0].start, current[-1].end, current[0].solo))
            current, size = [], 0

        for unit in units:
            if unit.solo or size + unit.tokens > self.limit:
                close()
            current.append(unit)
            size += unit.tokens
            # A segment ends after a unit decided by that unit's text alone.
            digest = xxhash.xxh3_64_intdigest(self.text[unit.start:unit.end].encode("utf-8"))
            if unit.solo or digest < unit.tokens * cut_scale:
                close()
        close()
        return [self._with_overlap(k, s, e, solo) for k, (s, e, solo) in enumerate(chunks)]

    def _with_overlap(self, k: int, start: int, end: int, solo: bool) -> tuple[int, int]:
        if not self.c.overlap or k == 0 or solo:
            return (start, end)
        first = bisect_left(self.starts, start)
        j = max(0, first - self.c.overlap)
        # From the start of a word: a word cut in two would tokenize differently on its own.
        while j < first and j > 0 and not self.text[self.starts[j] - 1].isspace():
            j += 1
        return (self.starts[j], end) if j < first else (start, end)


def _pieces(text: str, a: int, b: int, separator: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    """The spans of text[a:b] between matches of `separator`, without surrounding whitespace."""
    pos = a
    for m in separator.finditer(text, a, b):
        if m.end() == m.start() and m.start() in (a, pos):
            continue
        yield from _trimmed(text, pos, m.start())
        pos = m.end()
    yield from _trimmed(text, pos, b)


def _trimmed(text: str, a: int, b: int) -> Iterator[tuple[int, int]]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if a < b:
        yield (a, b)


def make_chunker(model: str, max_seq_length: int, prompt: str, chunk_tokens: int,
                 overlap: int, *, api: bool = False) -> Chunker | None:
    """The chunker for an index's configuration, or None where there is nothing to chunk by.

    The fake model has no window: it chunks only by `chunk_tokens`, counting whitespace words. Any
    other model chunks at its window (less its special and prompt tokens) or at `chunk_tokens`, which
    may only be less; an API model (`api`) at its per-input limit, counted as its backend counts. The
    tokenizer is loaded on first use."""
    if model.startswith("fake:"):
        return Chunker(lambda: (WordCounter(), chunk_tokens), overlap) if chunk_tokens else None
    if max_seq_length <= 0:
        return None

    def load() -> tuple[TokenCounter, int]:
        tok: HFTokenCounter | ApiTokenCounter = ApiTokenCounter(model) if api else load_token_counter(model)
        prompt_tokens = len(tok.offsets(prompt)[0]) if prompt else 0
        window = max_seq_length - tok.specials - prompt_tokens
        if chunk_tokens > window:
            raise IndexerError(
                f"--chunk-tokens {chunk_tokens}: model {model!r} embeds at most {window} tokens of text "
                f"({max_seq_length} less {tok.specials} special"
                + (f" and {prompt_tokens} prompt" if prompt_tokens else "") + " tokens); give at most that")
        return tok, chunk_tokens or window

    return Chunker(load, overlap)
