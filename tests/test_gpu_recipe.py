"""The ``gpu`` Shakespeare variant: nanoGPT's GPU recipe, and that the same config trains on a CPU."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2t_jax.cli import main
from p2t_jax.configuration import load_config
from p2t_jax.optim.chains import make_schedule
from p2t_jax.tasks import language_model


def test_gpu_recipe_is_nanogpts(repo_root):
    c = load_config(f"{repo_root}/configs/shakespeare.py:gpu")
    language_model.validate(c)
    m, o, t = c.model, c.optim, c.train
    assert (m.num_layers, m.num_heads, m.emb_dim, m.mlp_dim, m.max_len) == (6, 6, 384, 1536, 256)
    assert (m.dropout_rate, m.use_bias, m.tie_embeddings) == (0.2, False, True)
    assert c.precision.to_dict() == {"params": "float32", "compute": "bfloat16", "output": "float32"}
    assert (t.batch_size, t.num_steps, t.eval_every, t.eval_batches) == (64, 5000, 250, 200)
    assert (o.learning_rate, o.end_learning_rate, o.warmup_steps, o.b1, o.b2, o.weight_decay, o.grad_clip_norm) == (
        1e-3, 1e-4, 100, 0.9, 0.99, 0.1, 1.0)
    # nanoGPT's get_lr: linear warm-up over 100 steps, cosine from 1e-3 to 1e-4 between steps 100 and 5,000
    lr = make_schedule(o, t.num_steps)
    np.testing.assert_allclose([float(lr(s)) for s in (50, 100, 2550, 5000)], [5e-4, 1e-3, 5.5e-4, 1e-4], rtol=1e-5)
    # nanoGPT's 10.65M parameters: 6 * 12 * 384^2 in the blocks, 65 * 384 tied embedding, 256 * 384 positions,
    # 13 LayerNorm scales of 384
    model = language_model.make_model(c)
    assert (model.cfg.dtype, model.cfg.output_dtype) == (jnp.bfloat16, jnp.float32)
    params = jax.eval_shape(lambda: language_model.init_params(model, jax.random.PRNGKey(0))["params"])
    sizes = [x.size for x in jax.tree.leaves(params)]
    assert sum(sizes) == 6 * 12 * 384**2 + 65 * 384 + 256 * 384 + 13 * 384
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


@pytest.mark.slow
def test_gpu_recipe_trains_on_cpu(tiny_corpus, repo_root, tmp_path):
    """The recipe unchanged but for a batch of 2 on one device and the step counts: bfloat16 compute
    and dropout run here."""
    workdir = tmp_path / "gpu"
    code = main(["train", "--config", f"{repo_root}/configs/shakespeare.py:gpu", "--workdir", str(workdir),
                 "--no-progress", "--config.train.batch_size=2", "--config.parallel.mesh_shape=(1,1,1)",
                 "--config.train.num_steps=3", "--config.train.log_every=1", "--config.train.eval_every=3",
                 "--config.train.eval_batches=1"])
    assert code == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["final_step"] == 3
    # about ln(65) = 4.17 at initialisation; finite, and not yet much lower after three steps
    assert 3.0 < summary["eval"]["loss"] < 4.6 and 3.0 < summary["train"]["loss"] < 4.6
