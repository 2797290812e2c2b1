"""A language-model task of one's own, outside the package: `p2t sample` runs its model through
its ``decoder(config)`` hook, and its output is checked against the labels at the first step."""

import contextlib
import io
import json
import re
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2t_jax import cli
from p2t_jax.configuration import ConfigError

OWN_TASK = textwrap.dedent('''
    """A tiny causal character model: each position sees itself and the mean of its past."""
    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np

    from p2t_jax.data.lm import LMBatches
    from p2t_jax.data.tokenizer import CharTokenizer
    from p2t_jax.models.decoder import Decoder
    from p2t_jax.training.config_groups import default_optim, default_parallel, default_train, validate_groups
    from p2t_jax.training.loop import Task
    import ml_collections

    CAN_SAMPLE = True
    TEXT = "to be or not to be, that is the question; whether tis nobler in the mind to suffer. " * 20


    class TinyLM(nn.Module):
        vocab_size: int
        width: int
        context: int
        pooled: bool = False

        @nn.compact
        def __call__(self, tokens_BT):
            T = tokens_BT.shape[1]
            pos_LD = self.param("pos", nn.initializers.normal(0.02), (self.context, self.width))
            x_BTD = nn.Embed(self.vocab_size, self.width)(tokens_BT) + pos_LD[:T]
            causal_TT = jnp.tril(jnp.ones((T, T)))
            past_BTD = (causal_TT / causal_TT.sum(1, keepdims=True)) @ x_BTD
            h_BTH = nn.gelu(nn.Dense(4 * self.width)(jnp.concatenate([x_BTD, past_BTD], -1)))
            logits_BTV = nn.Dense(self.vocab_size)(h_BTH)
            return logits_BTV.mean(1) if self.pooled else logits_BTV


    def tokenizer():
        return CharTokenizer("".join(sorted(set(TEXT))))


    def default_config():
        c = ml_collections.ConfigDict()
        c.task = "own_lm"
        c.seed = 0
        c.model = ml_collections.ConfigDict(dict(width=32, context=16, vocab_size=0, pooled=False))
        c.optim = default_optim(learning_rate=1e-2, warmup_steps=2)
        c.train = default_train(batch_size=8, num_steps=6, log_every=3, eval_every=6, checkpoint_every=6)
        c.train.eval_batches = 1
        c.parallel = default_parallel()
        return c


    def validate(config):
        validate_groups(config)


    def make_model(config):
        m = config.model
        return TinyLM(m.vocab_size or tokenizer().vocab_size, m.width, m.context, m.pooled)


    def build(config):
        model, tok = make_model(config), tokenizer()
        ids = tok.encode(TEXT)
        batches = LMBatches({"train": ids[:1500], "validation": ids[1500:]}, config.train.batch_size,
                            config.model.context, config.seed)

        def loss_fn(params, model_state, batch, rng, train):
            logits_BTV = model.apply({"params": params}, batch["inputs"])
            log_p = jax.nn.log_softmax(logits_BTV)
            loss = -jnp.take_along_axis(log_p, batch["targets"][..., None], -1).mean()
            return loss, ({}, model_state)

        init = lambda rng: model.init(rng, jnp.zeros((1, config.model.context), jnp.int32))
        task = Task(init_variables=init, loss_fn=loss_fn, train_batch=batches.train_batch,
                    eval_batches=lambda: batches.eval_batches(config.train.eval_batches),
                    items_per_batch=config.train.batch_size * config.model.context,
                    save_assets=lambda workdir: tok.save(workdir / "tokenizer.json"),
                    logits_fn=lambda params, model_state, batch: model.apply({"params": params}, batch["inputs"]))
        return task, config


    def decoder(config):
        model = make_model(config)
        return Decoder(init_variables=lambda rng: model.init(rng, jnp.zeros((1, config.model.context), jnp.int32)),
                       logits_fn=lambda params, tokens_BT: model.apply({"params": params}, tokens_BT),
                       context=config.model.context)
''').replace("import flax.linen as nn\n", "import flax.linen as nn\nimport jax\n", 1)


@pytest.fixture
def own_task(tmp_path, monkeypatch):
    (tmp_path / "own_lm.py").write_text(OWN_TASK)
    (tmp_path / "own_config.py").write_text("from own_lm import default_config\n\n\ndef get_config(arg=None):\n"
                                            "    return default_config()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import own_lm

    return importlib.reload(own_lm)


def _p2t(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_p2t_samples_an_own_language_model_through_its_decoder(own_task, tmp_path):
    run = str(tmp_path / "run")
    code, out, err = _p2t("train", "--config", str(tmp_path / "own_config.py"), "--workdir", run, "--no-progress")
    assert code == 0, err
    code, out, err = _p2t("sample", "--workdir", run, "--prompt", "to be", "--max-new-tokens", "12",
                          "--temperature", "0")
    assert code == 0, err
    text = out.strip()
    assert text.startswith("to be") and len(text) == len("to be") + 12

    # The same greedy tokens, decoded by hand from the checkpoint's parameters.
    from p2t_jax.runs import load_run
    from p2t_jax.training.loop import restore_state

    config = load_run(run)
    dec = own_task.decoder(config)
    state, _ = restore_state(dec.init_variables, config, run)
    tok = own_task.tokenizer()
    tokens = list(tok.encode("to be"))
    logits_fn = jax.jit(dec.logits_fn)  # one compilation per window length, not one per operation and length
    for _ in range(12):
        window = jnp.asarray(tokens[-config.model.context:])[None]
        tokens.append(int(jnp.argmax(logits_fn(state.params, window)[0, -1])))
    assert text == tok.decode(np.asarray(tokens))
    # --stride belongs to the cache, which this model has not: it is not refused, the window is recomputed.
    assert _p2t("sample", "--workdir", run, "--prompt", "to", "--max-new-tokens", "3", "--stride", "40")[0] == 0


def test_own_task_without_a_decoder_is_refused_in_one_sentence(own_task, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "own_lm"}))
    monkeypatch.delattr(own_task, "decoder")
    code, _, err = _p2t("sample", "--workdir", str(run), "--prompt", "to")
    assert code == 2 and "the 'own_lm' task sets CAN_SAMPLE but defines no decoder(config)" in err


@pytest.mark.parametrize("override, match", [
    ("model.pooled=true", r"the task's model returns logits of shape \[8, \d+\] for labels 'targets' of shape "
                          r"\[8, 16\]; the loss needs one row of scores per label, logits of shape \[8, 16, V\]"),
    ("model.vocab_size=20", r"the task's model scores 20 classes \(the logits' last axis\) but the labels 'targets' "
                            r"reach \d+; its vocabulary or head must have at least \d+ outputs\."),
])
def test_the_output_is_checked_against_the_labels_before_the_first_step(own_task, tmp_path, override, match):
    code, _, err = _p2t("train", "--config", str(tmp_path / "own_config.py"), "--workdir", str(tmp_path / "run"),
                        "--no-progress", f"--config.{override}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err
    assert not (tmp_path / "run").exists()


def test_a_pooled_output_without_logits_fn_is_one_sentence_not_a_traceback(own_task, tmp_path):
    from p2t_jax.configuration import load_config
    from p2t_jax.training.loop import train_and_evaluate

    config = load_config(str(tmp_path / "own_config.py"))
    with config.unlocked():
        config.model.pooled = True
    task, config = own_task.build(config)
    task.logits_fn = None
    with pytest.raises(ConfigError, match=r"the task's first training step cannot be traced \(\w+Error: .*\); "
                                          r"check that the model's output and the loss's labels agree in shape\."):
        train_and_evaluate(task, config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_allow_change_must_name_a_config_key(own_task, tmp_path):
    code, _, err = _p2t("train", "--config", str(tmp_path / "own_config.py"), "--workdir", str(tmp_path / "run"),
                        "--no-progress", "--allow-change", "optim.learning_rate", "--allow-change", "optim.lr")
    assert code == 2 and err.strip() == ("error: --allow-change 'optim.lr' is not a config key (such as "
                                         "optim.learning_rate, or a group such as optim).")
    assert not (tmp_path / "run").exists()


def test_a_head_too_small_without_logits_fn_is_not_blamed_on_the_learning_rate(own_task, tmp_path):
    from p2t_jax.configuration import load_config
    from p2t_jax.training.loop import train_and_evaluate
    from p2t_jax.training.stopping import Diverged

    config = load_config(str(tmp_path / "own_config.py"))
    with config.unlocked():
        config.model.vocab_size = 20  # labels reach further: their log-probabilities are NaN from the start
    task, config = own_task.build(config)
    task.logits_fn = None
    with pytest.raises(Diverged, match=r"training diverged at step 1, before any update could have: the loss became "
                                       r"nan; nothing was saved \(the initial model already gives it: check that "
                                       r"its output fits the labels") as e:
        train_and_evaluate(task, config, tmp_path / "run", progress=False)
    assert "learning_rate" not in str(e.value)
