r"""Character and word tokenizers: a fixed vocabulary, ``encode`` to ids, ``decode`` back to text."""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

__all__ = ["CharTokenizer", "WordTokenizer"]


def _ids_to_list(ids, name: str = "ids") -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex():
            raise TypeError(f"{name} must hold integers, got dtype {ids.dtype}")
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"{name} must be a 1-D integer tensor or a sequence of ints, got {type(ids).__name__}")
    out = list(ids)
    if not all(isinstance(i, int) for i in out):
        raise TypeError(f"{name} must hold ints")
    return out


class _Vocabulary:
    """Shared bookkeeping: ``itos`` (id -> symbol) and ``stoi`` (symbol -> id)."""

    def __init__(self, symbols: Sequence[str]):
        self.itos: list[str] = list(symbols)
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def _lookup(self, symbols: list[str], name: str) -> list[int]:
        unknown = sorted({s for s in symbols if s not in self.stoi})
        if unknown:
            shown = ", ".join(repr(s) for s in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            raise ValueError(f"{name} contains {len(unknown)} symbol(s) not in the vocabulary: {shown}")
        return [self.stoi[s] for s in symbols]

    def _symbols(self, ids, name: str) -> list[str]:
        ids = _ids_to_list(ids, name)
        bad = sorted({i for i in ids if not 0 <= i < len(self.itos)})
        if bad:
            raise ValueError(f"{name} contains ids outside [0, {len(self.itos)}): {bad[:10]}")
        return [self.itos[i] for i in ids]


class CharTokenizer(_Vocabulary):
    r"""One id per character; the vocabulary is the sorted set of characters of ``symbols``.

    ``symbols`` is a training text or an alphabet (any string or iterable of one-character strings):
    $\text{itos} = \operatorname{sorted}(\operatorname{set}(\text{symbols}))$, $\text{stoi} = \text{itos}^{-1}$.
    ``encode(text)`` -> LongTensor (len(text),); ``decode(ids)`` -> str, so ``decode(encode(t)) == t``.
    See :cite:`karpathy2015char`.
    """

    def __init__(self, symbols: str | Iterable[str]):
        chars = set(symbols)
        if not chars:
            raise ValueError("symbols must contain at least one character, got an empty input")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("symbols must be a string or an iterable of single characters")
        super().__init__(sorted(chars))

    def encode_list(self, text: str) -> list[int]:
        """``text`` -> list of ids; raises ValueError naming the unknown characters."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._lookup(list(text), "text")

    def encode(self, text: str) -> torch.Tensor:
        """``text`` -> ids, int64 tensor of shape (len(text),)."""
        return torch.tensor(self.encode_list(text), dtype=torch.long)

    def decode(self, ids) -> str:
        """ids (1-D tensor or sequence of ints) -> the string they stand for."""
        return "".join(self._symbols(ids, "ids"))


_WORD_PATTERN = re.compile(r"[A-Za-z]+|\n|[^\sA-Za-z]")


class WordTokenizer(_Vocabulary):
    r"""One id per word, newline or punctuation mark; the vocabulary is read from a corpus.

    Splitting: maximal runs of letters are words, each newline and each other non-space character
    is its own token, spaces and tabs only separate. The vocabulary is the sorted set of tokens of
    ``corpus`` (case is kept: ``The`` and ``the`` are different words).
    ``decode`` writes a space before every word except the first one and one that follows a
    newline; punctuation and newlines get no space. So ``decode(encode(t)) == t`` for text spaced
    that way, as every text of :func:`minilib.data.tiny_corpus` is. See :cite:`bengio2003neural`.
    """

    def __init__(self, corpus: str):
        if not isinstance(corpus, str):
            raise TypeError(f"corpus must be a str, got {type(corpus).__name__}")
        tokens = set(self.split(corpus))
        if not tokens:
            raise ValueError("corpus must contain at least one token, got an empty or blank string")
        super().__init__(sorted(tokens))

    @staticmethod
    def split(text: str) -> list[str]:
        """``text`` -> list of word / newline / punctuation strings (whitespace dropped)."""
        return _WORD_PATTERN.findall(text)

    def encode_list(self, text: str) -> list[int]:
        """``text`` -> list of ids; raises ValueError naming the unknown words."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._lookup(self.split(text), "text")

    def encode(self, text: str) -> torch.Tensor:
        """``text`` -> ids, int64 tensor of shape (number of tokens,)."""
        return torch.tensor(self.encode_list(text), dtype=torch.long)

    def decode(self, ids) -> str:
        """ids -> text: a space before each word except at the start and after a newline."""
        out: list[str] = []
        prev = None
        for tok in self._symbols(ids, "ids"):
            if prev is not None and prev != "\n" and tok != "\n" and tok[0].isalpha():
                out.append(" ")
            out.append(tok)
            prev = tok
        return "".join(out)
