"""bench/torch_reference.py is the library's Transformer: with the JAX model's parameters it computes the
same loss, gradients and logits, and its key/value-cache sampler makes the same tokens as
p2t_jax.sampling.generate_cached (so the benches time the same work on both sides)."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2t_jax.configuration import apply_overrides
from p2t_jax.sampling import generate_cached
from p2t_jax.tasks import language_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ref(request):
    path = request.config.rootpath / "bench" / "torch_reference.py"
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pair(ref, request):
    """(config, JAX model, its params, the torch model holding the same parameters)."""
    from p2t_jax.configuration import load_config

    config = load_config(str(request.config.rootpath / "configs" / "shakespeare.py") + ":nanogpt_cpu")
    config = apply_overrides(config, ["model.max_len=16", "model.emb_dim=32", "model.num_heads=2",
                                      "model.num_layers=2", "model.mlp_dim=128"])
    model = language_model.make_model(config)
    params = language_model.init_params(model, jax.random.PRNGKey(0))["params"]
    # larger weights than at initialisation, so that logits differ clearly between tokens
    params = jax.tree.map(lambda p: p * 20 if p.ndim >= 2 else p, params)
    torch_model = ref.load_jax_params(ref.config_model(config.model), params)
    return config, model, params, torch_model


def test_same_loss_and_gradients(ref, pair):
    config, model, params, torch_model = pair
    rng = np.random.default_rng(0)
    data = rng.integers(0, 65, (3, 17))
    batch = {"inputs": jnp.asarray(data[:, :-1], jnp.int32), "targets": jnp.asarray(data[:, 1:], jnp.int32)}
    loss_fn = language_model.make_loss_fn(model)
    (loss, _), grads = jax.value_and_grad(lambda p: loss_fn(p, {}, batch, None, False), has_aux=True)(params)

    torch_model.zero_grad()
    torch_loss = torch_model(torch.from_numpy(data[:, :-1]), torch.from_numpy(data[:, 1:]))
    torch_loss.backward()
    np.testing.assert_allclose(torch_loss.item(), float(loss), rtol=1e-5)
    as_torch = ref.load_jax_params(ref.config_model(config.model), grads)  # JAX's gradients in torch's layout
    for (name, p), (_, g) in zip(torch_model.named_parameters(), as_torch.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), g.detach().numpy(), atol=2e-5, rtol=1e-4, err_msg=name)


def test_cached_decode_matches_full_forward(ref, pair):
    _, model, params, torch_model = pair
    tokens = torch.from_numpy(np.random.default_rng(1).integers(0, 65, (2, 16)))
    with torch.no_grad():
        full = torch_model.logits(tokens)
        np.testing.assert_allclose(full.numpy(), np.asarray(model.apply({"params": params}, jnp.asarray(
            tokens.numpy(), jnp.int32))), atol=1e-4)
        caches = ref.new_caches(torch_model, 2)
        steps = [torch_model.logits(tokens[:, :5], caches, 0)]  # a prefill of 5, then one position at a time
        steps += [torch_model.logits(tokens[:, t:t + 1], caches, t) for t in range(5, 16)]
    np.testing.assert_allclose(torch.cat(steps, dim=1).numpy(), full.numpy(), atol=1e-5)


def test_greedy_samples_match_the_library(ref, pair):
    """40 new tokens from a context of 16: the cache fills and is rebuilt several times on both sides."""
    _, model, params, torch_model = pair
    prompt = np.array([[1, 2, 3], [7, 8, 9]])
    ours = generate_cached(model, params, jnp.asarray(prompt, jnp.int32), jax.random.PRNGKey(0), max_new_tokens=40,
                           temperature=0.0)
    theirs = ref.generate_cached(torch_model, torch.from_numpy(prompt), 40, temperature=0.0)
    np.testing.assert_array_equal(theirs.numpy(), np.asarray(ours))
    assert len(np.unique(np.asarray(ours)[:, 3:])) > 10  # varied: the two sides agree on more than a fixed point


def test_step_peak_bytes_counts_the_activations(ref):
    """The step's memory grows with the batch (activations), from what the allocator reports."""
    small, large = (ref.step_peak_bytes(ref.make_step(ref.GPT(65, 32, 32, 1, 2)), ref.random_batches(1, b, 32)[0])
                    for b in (2, 16))
    assert 0 < small < large
