"""Chapter 9's translation task: verb-final source sentences into verb-second target order.

A small generated grammar. A target (English-like) sentence is::

    NAME VERB MIDDLE        e.g.  anna sees the old dog near the tree today

and its source (German-like, as in a subordinate clause) is the word-by-word translation
with the verb moved to the end::

    NAME MIDDLE' VERB'      e.g.  anna die alt hund bei die baum heute sieht

``MIDDLE`` is a run of phrases, each a noun phrase (``the [ADJ] NOUN``), a prepositional
phrase (``PREP the NOUN``) or an adverb, drawn until the sentence has the length asked
for. Every word translates to exactly one word, so the alignment is known: target word 0
comes from source word 0, the verb (target word 1) from the last source word, target word
``j >= 2`` from source word ``j - 1``: the diagonal, broken where the grammar reorders.

Sentences are split by sentence, not by draw: a sentence belongs to the test split when the
CRC-32 of its source words falls in the lowest ``test_share`` of the range
(:func:`is_test_sentence`); training batches skip those, evaluation sets hold only them.
Batch ``step`` comes from ``numpy.random.default_rng((seed, step))``; evaluation sets from
``(seed, EVAL_STREAM, length)``.
"""

from __future__ import annotations

import zlib

import numpy as np

from p2t_jax.data.words import PAD, WordVocab

NAMES = ("anna", "ben", "clara", "david", "emma", "felix", "greta", "hans")
VERBS = {"sees": "sieht", "likes": "mag", "chases": "jagt", "finds": "findet", "helps": "hilft", "calls": "ruft",
         "follows": "folgt", "feeds": "fuettert"}
ARTICLE = {"the": "die"}
ADJECTIVES = {"big": "gross", "small": "klein", "old": "alt", "young": "jung", "red": "rot", "quiet": "still"}
NOUNS = {"cat": "katze", "dog": "hund", "bird": "vogel", "horse": "pferd", "fox": "fuchs", "cow": "kuh",
         "goat": "ziege", "mouse": "maus", "house": "haus", "tree": "baum"}
PREPOSITIONS = {"in": "im", "near": "bei", "under": "unter", "behind": "hinter", "with": "mit", "over": "ueber"}
ADVERBS = {"today": "heute", "often": "oft", "again": "wieder", "slowly": "langsam", "gladly": "gern",
           "still": "noch"}

_TRANSLATION = {**{n: n for n in NAMES}, **VERBS, **ARTICLE, **ADJECTIVES, **NOUNS, **PREPOSITIONS, **ADVERBS}
TARGET_VOCAB = WordVocab(("<bos>", "<eos>") + tuple(_TRANSLATION))
SOURCE_VOCAB = WordVocab(tuple(_TRANSLATION.values()))
BOS, EOS = TARGET_VOCAB.ids["<bos>"], TARGET_VOCAB.ids["<eos>"]
MIN_LENGTH = 3  # NAME VERB and one middle word
EVAL_STREAM = 2**31 - 1

# target id -> source id (the word's translation)
_TO_SOURCE = np.zeros(len(TARGET_VOCAB), np.int32)
for _word, _translated in _TRANSLATION.items():
    _TO_SOURCE[TARGET_VOCAB.ids[_word]] = SOURCE_VOCAB.ids[_translated]
_ID = TARGET_VOCAB.ids
_NAME_IDS = np.asarray([_ID[w] for w in NAMES])
_VERB_IDS = np.asarray([_ID[w] for w in VERBS])
_ADJ_IDS = np.asarray([_ID[w] for w in ADJECTIVES])
_NOUN_IDS = np.asarray([_ID[w] for w in NOUNS])
_PREP_IDS = np.asarray([_ID[w] for w in PREPOSITIONS])
_ADV_IDS = np.asarray([_ID[w] for w in ADVERBS])
_THE = _ID["the"]


def target_sentence(rng: np.random.Generator, length: int) -> np.ndarray:
    """The target ids of one sentence of ``length`` words: ``NAME VERB MIDDLE``.

    The middle phrases are drawn until the length is reached, each one that still fits: an
    adverb (1 word), ``the NOUN`` (2), ``the ADJ NOUN`` or ``PREP the NOUN`` (3).
    """
    draws = iter(rng.integers(0, 2**31, 4 * length + 2).tolist())  # one call for all the choices

    def pick(ids):
        return int(ids[next(draws) % len(ids)])

    words = [pick(_NAME_IDS), pick(_VERB_IDS)]
    while len(words) < length:
        room = length - len(words)
        kind = next(draws) % (1 if room == 1 else 2 if room == 2 else 4)
        if kind == 0:
            words.append(pick(_ADV_IDS))
        elif kind == 1:
            words += [_THE, pick(_NOUN_IDS)]
        elif kind == 2:
            words += [_THE, pick(_ADJ_IDS), pick(_NOUN_IDS)]
        else:
            words += [pick(_PREP_IDS), _THE, pick(_NOUN_IDS)]
    return np.asarray(words, np.int32)


def to_source(target_ids: np.ndarray) -> np.ndarray:
    """The source ids of a target sentence: each word translated, the verb (position 1) moved to the end."""
    translated = _TO_SOURCE[np.asarray(target_ids)]
    return translated[np.r_[0, 2:len(translated), 1]]


def is_test_sentence(source_ids: np.ndarray, test_share: float) -> bool:
    """Whether a sentence belongs to the test split (by the CRC-32 of its source ids)."""
    return zlib.crc32(np.asarray(source_ids, "<i4").tobytes()) < test_share * 2**32


class ReorderBatches:
    """Deterministic batches ``{"source": int32[B, S], "target": int32[B, T], "length": int32[B]}``.

    ``target`` holds the target words then ``<eos>``, then ``<pad>``; ``S`` = ``max_len``
    words and ``T`` = ``max_len + 1``, so one compiled step serves every batch.

    Args:
      seed: the data seed.
      batch_size: sentences per training batch.
      lengths: ``(lo, hi)``: training sentences have ``lo..hi`` words, uniformly.
      max_len: the longest sentence (rows are padded to it).
      test_share: the share of sentences held out by :func:`is_test_sentence`.
    """

    def __init__(self, seed: int, batch_size: int, lengths: tuple[int, int], max_len: int, test_share: float):
        lo, hi = lengths
        if not MIN_LENGTH <= lo <= hi <= max_len:
            raise ValueError(f"lengths {lengths} must satisfy {MIN_LENGTH} <= lo <= hi <= max_len = {max_len}.")
        if not 0 < test_share < 1:
            raise ValueError(f"test_share must be in (0, 1), got {test_share}.")
        self.seed, self.batch_size, self.lengths, self.max_len = seed, batch_size, (lo, hi), max_len
        self.test_share = test_share

    def _draw(self, rng: np.random.Generator, lengths: np.ndarray, test: bool) -> dict[str, np.ndarray]:
        source = np.full((len(lengths), self.max_len), PAD, np.int32)
        target = np.full((len(lengths), self.max_len + 1), PAD, np.int32)
        for i, n in enumerate(lengths):
            while True:
                words = target_sentence(rng, int(n))
                src = to_source(words)
                if is_test_sentence(src, self.test_share) == test:
                    break
            source[i, :n], target[i, :n], target[i, n] = src, words, EOS
        return {"source": source, "target": target, "length": np.asarray(lengths, np.int32)}

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch number ``step`` of training sentences (never a test-split sentence)."""
        rng = np.random.default_rng((self.seed, int(step)))
        lo, hi = self.lengths
        return self._draw(rng, rng.integers(lo, hi + 1, self.batch_size), test=False)

    def eval_set(self, length: int, size: int) -> dict[str, np.ndarray]:
        """``size`` test-split sentences of ``length`` words (the same every call)."""
        if not MIN_LENGTH <= length <= self.max_len:
            raise ValueError(f"length {length} must lie in {MIN_LENGTH}..{self.max_len}.")
        rng = np.random.default_rng((self.seed, EVAL_STREAM, int(length)))
        return self._draw(rng, np.full(size, length), test=True)


def decode_target(ids: np.ndarray) -> str:
    """The words of target ids up to ``<eos>``."""
    ids = np.asarray(ids).reshape(-1)
    end = np.flatnonzero(ids == EOS)
    return TARGET_VOCAB.decode(ids[:end[0]] if len(end) else ids)
