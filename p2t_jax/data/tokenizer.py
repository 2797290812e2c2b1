"""A character-level tokenizer with a fixed, saved alphabet."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

# The 65 characters of the classic tiny-shakespeare corpus, in sorted order. The embedded
# corpus is normalised onto exactly this alphabet, so both data sources share one vocabulary.
SHAKESPEARE_ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """Maps characters to integer ids and back.

    Args:
      alphabet: the characters, each once; id ``i`` is ``alphabet[i]``.
    """

    def __init__(self, alphabet: str):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("a tokenizer alphabet may hold each character once.")
        self.alphabet = alphabet
        self._ids = {c: i for i, c in enumerate(alphabet)}
        self._table = np.array([ord(c) for c in alphabet], dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of ``text`` outside the alphabet, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._ids))

    def encode(self, text: str) -> np.ndarray:
        """Returns ``int32[len(text)]`` ids; raises ValueError naming any unknown character."""
        bad = self.unknown_chars(text)
        if bad:
            raise ValueError(f"characters {''.join(bad)!r} are not in the vocabulary of {self.vocab_size} characters.")
        lut = np.full(max(self._table.max(), max(map(ord, text), default=0)) + 1, -1, dtype=np.int32)
        lut[self._table] = np.arange(self.vocab_size, dtype=np.int32)
        return lut[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)] if text else np.zeros(0, np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Returns the text for a 1-D sequence of ids."""
        return "".join(self.alphabet[int(i)] for i in np.asarray(ids).reshape(-1))

    def save(self, path: os.PathLike | str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"type": "char", "alphabet": self.alphabet}, f)

    @classmethod
    def load(cls, path: os.PathLike | str) -> CharTokenizer:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls(data["alphabet"])
