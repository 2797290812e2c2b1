"""Chapter 8's memory task: "who was the subject?" after a run of filler words.

A sentence is ``SUBJECT filler_1 ... filler_n VERB OBJECT``, e.g. ``carol very quietly
often saw dave`` (three fillers). The model reads it word by word and, after the last
word, names the subject: one of :data:`SUBJECTS`, so chance is 1/6. The object is a name
too, so the answer cannot be read off the last name seen: the first one must be held.
The number of fillers ``n`` sets how far back the answer lies: the subject is ``n + 2``
steps before the question.

Batches are ``{"tokens": int32[B, L], "label": int32[B], "fillers": int32[B]}``, words
first and ``<pad>`` (id 0) after them. Batch ``step`` is drawn from
``numpy.random.default_rng((seed, step))``, so a resumed run sees the batches a straight
one would; evaluation sets are drawn from ``(seed, EVAL_STREAM, n)``, the same at every
evaluation.
"""

from __future__ import annotations

import numpy as np

from p2t_jax.data.words import PAD, WordVocab

SUBJECTS = ("alice", "bob", "carol", "dave", "erin", "frank")
FILLERS = ("very", "quite", "really", "rather", "old", "young", "tall", "small", "happy", "tired", "quietly",
           "slowly", "often", "still", "then", "also", "today", "again", "always", "never", "surely", "perhaps",
           "gladly", "rarely")
VERBS = ("saw", "met", "found", "helped", "called", "followed", "paid", "thanked")
VOCAB = WordVocab(SUBJECTS + FILLERS + VERBS)
NUM_CLASSES = len(SUBJECTS)
EXTRA_WORDS = 3  # subject, verb, object: a sentence with n fillers has n + 3 words
EVAL_STREAM = 2**31 - 1  # the seed stream of evaluation sets, apart from every training step's

_SUBJECT_IDS = np.asarray([VOCAB.ids[w] for w in SUBJECTS], np.int32)
_FILLER_IDS = np.asarray([VOCAB.ids[w] for w in FILLERS], np.int32)
_VERB_IDS = np.asarray([VOCAB.ids[w] for w in VERBS], np.int32)


def sentence_length(fillers: int) -> int:
    """Words in a sentence with ``fillers`` filler words."""
    return fillers + EXTRA_WORDS


def draw(rng: np.random.Generator, fillers_B: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """One sentence per entry of ``fillers_B`` (its filler count), padded to ``length`` words."""
    fillers_B = np.asarray(fillers_B, np.int64)
    B = len(fillers_B)
    if B and sentence_length(int(fillers_B.max())) > length:
        raise ValueError(f"a sentence of {sentence_length(int(fillers_B.max()))} words does not fit in {length}.")
    labels = rng.integers(0, NUM_CLASSES, B)
    words_BL = rng.choice(_FILLER_IDS, (B, length))
    position_L = np.arange(length)[None, :]
    n_B1 = fillers_B[:, None]
    tokens = np.where(position_L <= n_B1, words_BL, PAD)
    tokens[:, 0] = _SUBJECT_IDS[labels]
    rows = np.arange(B)
    tokens[rows, fillers_B + 1] = rng.choice(_VERB_IDS, B)
    tokens[rows, fillers_B + 2] = _SUBJECT_IDS[rng.integers(0, NUM_CLASSES, B)]  # the object: a name too
    return {"tokens": tokens.astype(np.int32), "label": labels.astype(np.int32), "fillers": fillers_B.astype(np.int32)}


class MemoryBatches:
    """Deterministic batches of the memory task.

    Args:
      seed: the data seed.
      batch_size: sentences per training batch.
      train_fillers: ``(lo, hi)``: training sentences have ``lo..hi`` fillers, uniformly.
      max_len: words per evaluation row (every evaluation set is padded to it, so one compiled
        evaluation serves every filler count).
    """

    def __init__(self, seed: int, batch_size: int, train_fillers: tuple[int, int], max_len: int):
        lo, hi = train_fillers
        if not 0 <= lo <= hi or sentence_length(hi) > max_len:
            raise ValueError(f"train fillers {train_fillers} do not fit sentences of at most {max_len} words.")
        self.seed, self.batch_size, self.train_fillers, self.max_len = seed, batch_size, (lo, hi), max_len

    @property
    def train_length(self) -> int:
        """Words per training row: the longest training sentence."""
        return sentence_length(self.train_fillers[1])

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch number ``step``: ``tokens`` ``int32[B, train_length]``, ``label``, ``fillers`` ``int32[B]``."""
        rng = np.random.default_rng((self.seed, int(step)))
        lo, hi = self.train_fillers
        return draw(rng, rng.integers(lo, hi + 1, self.batch_size), self.train_length)

    def eval_set(self, fillers: int, size: int) -> dict[str, np.ndarray]:
        """``size`` sentences with exactly ``fillers`` fillers, padded to ``max_len`` (the same every call)."""
        if sentence_length(fillers) > self.max_len:
            raise ValueError(f"sentences with {fillers} fillers have {sentence_length(fillers)} words, more than "
                             f"the maximum of {self.max_len}.")
        rng = np.random.default_rng((self.seed, EVAL_STREAM, int(fillers)))
        return draw(rng, np.full(size, fillers), self.max_len)
