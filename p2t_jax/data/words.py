"""A fixed word vocabulary for the synthetic sentence tasks (chapters 8 and 9).

Id 0 is always ``<pad>``; a sentence is a string of space-separated words. Padded batches
are ``int32[B, L]`` with the words first and ``<pad>`` after them, so a mask is
``tokens != PAD``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from p2t_jax.configuration import ConfigError

PAD = 0


class WordVocab:
    """Words to ids and back; ``words[0]`` is ``<pad>``.

    Args:
      words: every word after ``<pad>``, each once (special tokens such as ``<bos>`` included).
    """

    def __init__(self, words: Iterable[str]):
        self.words = ("<pad>",) + tuple(words)
        if len(set(self.words)) != len(self.words):
            raise ValueError("a vocabulary may hold each word once.")
        self.ids = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, sentence: str, *, max_words: int, what: str = "sentence") -> np.ndarray:
        """``int32[n]`` ids of a space-separated sentence.

        Raises:
          ConfigError: for an empty sentence, one of more than ``max_words`` words, or a word
            outside the vocabulary (one sentence each, naming the problem).
        """
        words = sentence.split()
        if not words:
            raise ConfigError(f"the {what} {sentence!r} is empty; give at least one word.")
        if len(words) > max_words:
            raise ConfigError(f"the {what} {sentence!r} has {len(words)} words, more than the configured "
                              f"maximum of {max_words}.")
        unknown = [w for w in dict.fromkeys(words) if w not in self.ids or w.startswith("<")]
        if unknown:
            raise ConfigError(f"the {what} {sentence!r} holds {', '.join(map(repr, unknown))}, not in the "
                              f"vocabulary of {len(self) - 1} words.")
        return np.asarray([self.ids[w] for w in words], np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The words of ``ids``, ``<pad>`` left out."""
        return " ".join(self.words[int(i)] for i in np.asarray(ids).reshape(-1) if int(i) != PAD)


def pad_rows(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """``int32[len(rows), length]``: each row's ids, then ``PAD``.

    Raises:
      ValueError: if a row is longer than ``length``.
    """
    out = np.full((len(rows), length), PAD, np.int32)
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"a row of {len(row)} tokens does not fit in {length}.")
        out[i, :len(row)] = row
    return out
