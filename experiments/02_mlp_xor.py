"""Chapter 2: linear layers collapse into one; a hand-set 2-2-1 sigmoid MLP solves XOR.

    python experiments/02_mlp_xor.py [--workdir runs/02_mlp_xor] [--config configs/xor_mlp.py]
                                     [--config.hand.scale=20 ...]

Writes ``activations.png``, ``xor_band.png``, ``xor_hidden_space.png`` and ``results.json``
into the workdir; exits 1 if a claim fails.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from p2t_jax.chapters import hand_mlp, perceptron_rule
from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.data.logic import truth_table
from p2t_jax.experiment import Claims, main
from p2t_jax.models.mlp import ACTIVATIONS, MLP
from p2t_jax.models.perceptron import init_params as perceptron_params
from p2t_jax.viz import mlp_figures as figures
from p2t_jax.viz.style import save_figure

PLOTTED_ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")


def validate(config: ml_collections.ConfigDict) -> None:
    c = config.collapse
    require_positive(config, "collapse.num_shapes", "collapse.num_stacks", "collapse.max_width", "collapse.batch_size",
                     "collapse.tolerance", "hand.scale", "hand.max_output_error", "hand.perceptron_epochs",
                     "plot.grid", "plot.z_range")
    require(c.max_layers >= 2, f"config key 'collapse.max_layers' must be at least 2, got {c.max_layers!r}.")
    require(c.batch_size > c.max_width + 1,
            f"config key 'collapse.batch_size' must exceed collapse.max_width + 1 = {c.max_width + 1} (or a linear "
            f"fit is exact by counting), got {c.batch_size!r}.")
    require_choice(config, "collapse.nonlinear_activation", [a for a in ACTIVATIONS if a != "linear"])


def collapse_trials(config: ml_collections.ConfigDict, key: jax.Array) -> list[dict]:
    """Random stacks of linear layers of random shapes: per shape, the widths and the worst errors."""
    c = config.collapse
    rng = np.random.default_rng(config.seed)
    trials = []
    for i in range(c.num_shapes):
        layers = int(rng.integers(2, c.max_layers + 1))
        widths = tuple(int(w) for w in rng.integers(1, c.max_width + 1, size=layers + 1))
        keys = jax.random.split(jax.random.fold_in(key, i), c.num_stacks)
        outs = [hand_mlp.collapse_check(k, widths, c.batch_size, c.nonlinear_activation) for k in keys]
        trials.append({"widths": widths, "stacks": c.num_stacks,
                       "linear_error": max(float(o["linear_error"]) for o in outs),
                       "nonlinear_residual": min(hand_mlp.linear_fit_residual(o["x"], o["nonlinear"]) for o in outs)})
    return trials


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    key = jax.random.PRNGKey(config.seed)
    results: dict = {}

    # 1. Two (or more) linear layers are one linear layer.
    trials = collapse_trials(config, key)
    worst = max(t["linear_error"] for t in trials)
    least_curved = min(t["nonlinear_residual"] for t in trials)
    results["collapse"] = {"trials": trials, "max_linear_error": worst, "min_nonlinear_residual": least_curved}
    c = config.collapse
    print(f"collapse: {c.num_shapes} random shapes x {c.num_stacks} random linear stacks (2..{c.max_layers} layers, "
          f"widths 1..{c.max_width}; shapes {[t['widths'] for t in trials]}): "
          f"max |stack - single layer| / max |stack| = {worst:.2e}")
    print(f"  with {config.collapse.nonlinear_activation} between the same layers the best single linear layer "
          f"misses by at least {least_curved:.3f} (relative)")
    claims.check("linear_layers_collapse", worst <= config.collapse.tolerance,
                 f"stacked linear layers equal x (W1 W2 ...) + b to {config.collapse.tolerance:g} (relative)", worst)
    claims.check("nonlinear_layers_do_not_collapse", least_curved > 100 * config.collapse.tolerance,
                 f"with {config.collapse.nonlinear_activation} no single linear layer fits (residual > "
                 f"{100 * config.collapse.tolerance:g})", least_curved)

    # 2. The hand-set 2-2-1 sigmoid network computes XOR.
    x, y = truth_table("XOR")
    params = hand_mlp.xor_params(config.hand.scale)
    model = MLP(features=(2, 1), activation="sigmoid")
    logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
    probs = np.asarray(jax.nn.sigmoid(logits[:, 0]))
    hidden = np.asarray(state["intermediates"]["hidden_0"][0])  # [4, 2]
    accuracy = float(np.mean((probs > 0.5) == (np.asarray(y) > 0.5)))
    max_error = float(np.max(np.abs(probs - np.asarray(y))))
    hidden_or = np.round(hidden[:, 0]).tolist() == np.asarray(truth_table("OR")[1]).tolist()
    hidden_and = np.round(hidden[:, 1]).tolist() == np.asarray(truth_table("AND")[1]).tolist()
    results["hand_xor"] = {"scale": config.hand.scale, "inputs": np.asarray(x), "outputs": probs, "hidden": hidden,
                           "accuracy": accuracy, "max_output_error": max_error,
                           "hidden_0_is_or": hidden_or, "hidden_1_is_and": hidden_and}
    print(f"hand-set 2-2-1 (s = {config.hand.scale:g}): outputs {np.array2string(probs, precision=5)} for rows "
          f"00 01 10 11; accuracy {accuracy:.0%}, max |output - target| {max_error:.2e}")
    print(f"  hidden units (rounded): h1 {np.round(hidden[:, 0]).astype(int).tolist()} (OR), "
          f"h2 {np.round(hidden[:, 1]).astype(int).tolist()} (AND)")
    claims.check("hand_xor_accuracy", accuracy == 1.0, "the hand-set 2-2-1 sigmoid net classifies all four XOR rows",
                 accuracy)
    claims.check("hand_xor_outputs", max_error <= config.hand.max_output_error,
                 f"its outputs are within {config.hand.max_output_error:g} of the targets", max_error)
    claims.check("hand_xor_hidden_units", hidden_or and hidden_and, "hidden unit 1 computes OR, hidden unit 2 AND",
                 [hidden_or, hidden_and])

    # 3. In hidden space XOR is linearly separable: chapter 1's perceptron now learns it.
    p0 = perceptron_params(key, 2)
    _, on_hidden = perceptron_rule.train(p0, jnp.asarray(hidden), y, key, lr=1.0,
                                         num_epochs=config.hand.perceptron_epochs, shuffle=True)
    _, on_inputs = perceptron_rule.train(p0, x, y, key, lr=1.0, num_epochs=config.hand.perceptron_epochs, shuffle=True)
    hidden_zero = int(perceptron_rule.first_zero(on_hidden.errors))
    results["hidden_space_perceptron"] = {
        "epochs": config.hand.perceptron_epochs,
        "epoch_of_zero_errors_on_hidden": hidden_zero + 1 if hidden_zero >= 0 else None,
        "fewest_errors_on_raw_inputs": int(on_inputs.errors.min())}
    print(f"perceptron on the hidden features: zero errors from epoch {hidden_zero + 1}; on the raw inputs the fewest "
          f"errors in {config.hand.perceptron_epochs} epochs is {int(on_inputs.errors.min())}")
    claims.check("hidden_space_separable", hidden_zero >= 0 and int(on_inputs.errors.min()) >= 1,
                 "chapter 1's perceptron learns XOR from the hidden features (not from the raw inputs)",
                 results["hidden_space_perceptron"])

    # Figures.
    z = np.linspace(-config.plot.z_range, config.plot.z_range, 401)
    values = {name: np.asarray(ACTIVATIONS[name](jnp.asarray(z))) for name in PLOTTED_ACTIVATIONS}
    derivs = {name: np.asarray(jax.vmap(jax.grad(ACTIVATIONS[name]))(jnp.asarray(z))) for name in PLOTTED_ACTIVATIONS}
    files = [save_figure(figures.activations(z, values, derivs), workdir / "activations.png").name]
    grid = np.linspace(-0.5, 1.5, config.plot.grid)
    gx, gy = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1), jnp.float32)
    grid_logits, grid_state = model.apply({"params": params}, points, mutable=["intermediates"])
    grid_probs = np.asarray(jax.nn.sigmoid(grid_logits[:, 0])).reshape(gx.shape)
    lines = hand_mlp.hidden_lines(params)
    fig = figures.xor_band(grid, grid_probs, np.asarray(x), np.asarray(y), lines, ["h1 = OR line", "h2 = AND line"])
    files.append(save_figure(fig, workdir / "xor_band.png").name)
    out_kernel, out_bias = np.asarray(params["dense_1"]["kernel"][:, 0]), float(params["dense_1"]["bias"][0])
    grid_hidden = np.asarray(grid_state["intermediates"]["hidden_0"][0])[:: max(1, len(points) // 4000)]
    fig = figures.hidden_space(hidden, np.asarray(y), np.asarray(x), (out_kernel[0], out_kernel[1], out_bias),
                               grid_hidden)
    files.append(save_figure(fig, workdir / "xor_hidden_space.png").name)
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 2: the multi-layer perceptron",
                default_workdir="runs/02_mlp_xor", default_config="configs/xor_mlp.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
