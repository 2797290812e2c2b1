"""The playground's pages of chapters 8, 9 and 11 (recurrent networks, attention, pointer networks) under
Streamlit's AppTest, over tiny runs of the chapters' experiments made here. A module of its own: its runs
train on one xdist worker while tests/test_playground.py's train on the other."""

import pathlib
import shutil

import pytest

pytest.importorskip("streamlit", reason="the playground needs the app extra: pip install -e '.[app]'")

from conftest import CompileCounter  # noqa: E402
from playground_pages import errors, images, make_sequence_runs, page, rerun  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder with chapters 8, 9 and 11's runs, as their experiments leave them."""
    return make_sequence_runs(tmp_path_factory.mktemp("runs"))


def test_rnn_page(runs, tmp_path):
    from p2t_jax.data import memory

    at = page("rnn", runs)
    assert not errors(at) and len(images(at)) == 1  # accuracy by fillers
    table, answers = at.dataframe[0].value, at.dataframe[1].value
    assert list(table["cell"]) == ["rnn", "lstm"] and "accuracy at 6 fillers" in table.columns
    assert list(answers["cell"]) == ["rnn", "lstm"] and set(answers["seed 0"]) <= set(memory.SUBJECTS)
    assert {m.label: m.value for m in at.metric}["Fillers in your sentence"] == "2"
    with CompileCounter() as compiled:  # another sentence and filler count: the same padded shape
        at.text_input(key="rnn_sentence").set_value("carol quite often still then met dave")
        at.slider(key="rnn_fillers").set_value(3)
        rerun(at)
    assert compiled.count == 0 and not errors(at)
    assert {m.label: m.value for m in at.metric}["Fillers in your sentence"] == "4"
    assert "accuracy at 3 fillers" in at.dataframe[0].value.columns
    assert "carol quite often still then met dave" in " ".join(m.value for m in at.markdown)
    at.text_input(key="rnn_sentence").set_value("alice very zebra saw bob")
    rerun(at)
    assert len(errors(at)) == 1 and "'zebra', not in the vocabulary" in errors(at)[0], errors(at)
    at.text_input(key="rnn_sentence").set_value("alice very old saw bob")
    older = tmp_path / "08_rnn"  # results but no trained parameters (copied alone): the curve, and the command
    older.mkdir()
    shutil.copy(runs / "08_rnn" / "results.json", older)
    at.text_input(key="rnn_folder").set_value(str(older))
    rerun(at)
    assert not errors(at) and len(images(at)) == 1 and [c.value for c in at.code] == [f"python experiments/08_rnn.py "
                                                                                      f"--workdir {older}"]
    at.text_input(key="rnn_folder").set_value(str(runs / "09_attention"))  # results, but not chapter 8's
    rerun(at)
    assert any(c.value.startswith("python experiments/08_rnn.py --workdir") for c in at.code)
    swapped = pathlib.Path(shutil.copytree(runs / "08_rnn", tmp_path / "swapped"))  # the LSTM's file under the RNN
    shutil.copy(swapped / "lstm" / "params.msgpack", swapped / "rnn" / "params.msgpack")
    at.text_input(key="rnn_folder").set_value(str(swapped))
    rerun(at)
    assert len(errors(at)) == 1 and errors(at)[0].startswith(f"'{swapped / 'rnn' / 'params.msgpack'}' holds "
                                                             f"parameters of another model"), errors(at)


def test_attention_page(runs):
    at = page("attention", runs)
    first = images(at)
    assert not errors(at) and len(first) == 1
    (verb,) = [m for m in at.metric if m.label == "Attention on the verb"]  # short: the column shows it whole
    assert verb.value.endswith("%") and "word 2" in verb.proto.help
    with CompileCounter() as compiled:  # another sentence, shorter: the source is padded to max_len
        at.text_input(key="att_sentence").set_value("ben die katze sieht")
        rerun(at)
    assert compiled.count == 0 and not errors(at) and images(at) != first
    for sentence, message in (("ben die zebra sieht", "holds 'zebra', not in the vocabulary"),
                              ("ben " * 7 + "sieht", "has 8 words, more than the configured maximum of 6"),
                              ("  ", "is empty")):
        at.text_input(key="att_sentence").set_value(sentence)
        rerun(at)
        assert len(errors(at)) == 1 and message in errors(at)[0], errors(at)
    at.text_input(key="att_folder").set_value(str(runs / "08_rnn"))  # results, but not chapter 9's
    rerun(at)
    assert any(c.value.startswith("python experiments/09_attention.py --workdir") for c in at.code)


def test_pointer_page(runs):
    at = page("pointer", runs)
    first = images(at)
    assert not errors(at) and len(first) == 1 and at.metric[0].label == "Exactly right"
    with CompileCounter() as compiled:  # other points, fewer: padded to the run's max_length
        at.number_input(key="ptr_seed").set_value(4)
        at.number_input(key="ptr_n").set_value(6)
        rerun(at)
    assert compiled.count == 0 and not errors(at) and images(at) != first
    at.number_input(key="ptr_n").set_value(10**4)
    rerun(at)
    assert errors(at) == ["Points must be in [3, 16], got 10000."]
    at.text_input(key="ptr_folder").set_value(str(runs / "missing"))
    rerun(at)
    assert any(c.value.startswith("python experiments/11_pointer.py --workdir") for c in at.code)
