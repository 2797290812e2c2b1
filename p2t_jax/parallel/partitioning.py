"""Logical axis names -> shardings of a TrainState, its batches and its compiled steps.

The model names each parameter's axes (``nn.with_logical_partitioning``) and constrains
its activations (``nn.with_logical_constraint``); ``parallel.logical_axis_rules`` maps
those names onto the mesh axes ``data``, ``fsdp`` and ``tensor``. From there on JAX does
the work: the state is created directly sharded (``jax.eval_shape`` -> shardings ->
``jax.jit`` with ``out_shardings``), the train step is ``jax.jit`` with explicit in/out
shardings and the state donated, and batches are global arrays sharded over the batch
axes. Optimiser state follows the parameter it belongs to, as Optax itself maps its state
onto the parameters (:func:`optimizer_specs`), whatever the optimiser.
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from p2t_jax.configuration import ConfigError, require
from p2t_jax.models import logical as logical_names
from p2t_jax.parallel import distributed
from p2t_jax.parallel.mesh import AXES, describe, make_mesh

# Logical name -> mesh axis (or axes, or None: replicated), tried in order; a mesh axis is
# used once per array. Activations have names of their own (p2t_jax.models.logical), so a
# parameter's "embed" is sharded over fsdp while the activations' embed axis stays whole and
# their batch takes data and fsdp. Configs import this table (p2t_jax.training.config_groups).
DEFAULT_RULES = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_vocab", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", None),
)


def check_rules(rules: Any) -> tuple:
    """``rules`` as a tuple of ``(name, axis | tuple of axes | None)``; lists (from JSON) become tuples.

    Raises:
      ConfigError: an entry that is not a pair, or a mesh axis that does not exist.
    """
    key = "config key 'parallel.logical_axis_rules'"
    require(isinstance(rules, (tuple, list)), f"{key} must be a tuple of (name, mesh axis or None) pairs.")
    out = []
    for entry in rules:
        require(isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str),
                f"{key} must hold (name, mesh axis or None) pairs, got {entry!r}.")
        name, axes = entry
        axes = tuple(axes) if isinstance(axes, (tuple, list)) else axes
        named = axes if isinstance(axes, tuple) else (() if axes is None else (axes,))
        require(all(a in AXES for a in named),
                f"{key} maps '{name}' to {axes!r}; the mesh axes are {', '.join(AXES)} (or None).")
        out.append((name, axes))
    return _with_activation_names(tuple(out))


def _with_activation_names(rules: tuple) -> tuple:
    """Rules written when activations shared the parameters' names (``batch``, ``embed``, ...)
    gain the activation names those stood for, mapped the same way and in the same order, so a
    run saved then shards as it did."""
    names = {name for name, _ in rules}
    if any(n.startswith("activation_") for n in names):
        return rules
    derived = tuple((logical_names.ACTIVATION_OF[n], axes) for n, axes in rules if n in logical_names.ACTIVATION_OF)
    return derived + rules


def _path(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
    """Bytes of ``tree``'s arrays that each device holds, computed from their shardings.

    Works alike for arrays and for abstract ``jax.ShapeDtypeStruct`` leaves with a sharding
    (nothing allocated), over every device of the shardings (all processes'). A replicated
    array counts whole on each device; a leaf without a sharding counts on the first device.
    """
    held: collections.Counter = collections.Counter()
    for x in jax.tree.leaves(tree):
        shape, itemsize = tuple(np.shape(x)), np.dtype(x.dtype).itemsize
        sharding = getattr(x, "sharding", None)
        if sharding is None:
            held[jax.devices()[0]] += math.prod(shape) * itemsize
            continue
        for device, index in sharding.devices_indices_map(shape).items():
            held[device] += math.prod(len(range(*s.indices(n))) for s, n in zip(index, shape)) * itemsize
    return dict(held)


class BoundedInFlight:
    """A jitted (or compiled) train step that keeps at most ``limit`` calls in flight.

    XLA's CPU client deadlocks once more than 32 multi-device computations with collectives
    are queued, which asynchronous dispatch does on a simulated multi-device CPU mesh. After
    each call this waits for the metrics of the call ``limit`` steps back, which costs
    nothing while the host is ahead anyway. ``lower(...).compile()`` keeps the bound.
    """

    def __init__(self, step: Callable, limit: int = 8):
        self.step, self.limit, self.pending = step, limit, collections.deque()

    def __call__(self, state: Any, batch: Any) -> tuple[Any, Any]:
        state, metrics = self.step(state, batch)
        self.pending.append(metrics)
        if len(self.pending) > self.limit:
            jax.block_until_ready(self.pending.popleft())
        return state, metrics

    def lower(self, *args: Any) -> Any:
        return _BoundedLowered(self.step.lower(*args), self.limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.step, name)


class _BoundedLowered:
    """A lowered step whose ``compile()`` keeps the bound."""

    def __init__(self, lowered: Any, limit: int):
        self.lowered, self.limit = lowered, limit

    def compile(self, *args: Any, **kwargs: Any) -> BoundedInFlight:
        return BoundedInFlight(self.lowered.compile(*args, **kwargs), self.limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lowered, name)


class Partitioner:
    """A mesh plus logical-axis rules, and everything placed through them.

    Args:
      mesh: a mesh with axes ``data``, ``fsdp``, ``tensor``.
      rules: see :data:`DEFAULT_RULES`.
      variable_axes: logical ``PartitionSpec`` of every variable (``{"params": ..., ...}``, as
        ``nn.get_partition_spec`` gives for the boxed variables); None replicates them.
      batch_size: the global batch size (rows each process reads are derived from it).
      abstract_variables: the abstract (``jax.eval_shape``) boxed variables ``variable_axes`` was
        read from, kept so that the state's shapes need not be traced again (None: not known).
    """

    def __init__(self, mesh: Mesh, rules: tuple = DEFAULT_RULES, variable_axes: Any = None,
                 batch_size: int | None = None, abstract_variables: Any = None):
        self.mesh = mesh
        self.rules = check_rules(rules)
        self.variable_axes = variable_axes
        self.abstract_variables = abstract_variables
        self.batch_size = batch_size
        self.batch_sharding = NamedSharding(mesh, self.mesh_spec((logical_names.BATCH,)))
        self.replicated = NamedSharding(mesh, PartitionSpec())

    # ---- names -> shardings -----------------------------------------------------------------

    def mesh_spec(self, logical: tuple) -> PartitionSpec:
        """Mesh ``PartitionSpec`` of an array whose axes have the ``logical`` names."""
        return nn.logical_to_mesh_axes(tuple(logical), self.rules)

    def shards(self, mesh_axes: Any) -> int:
        """How many pieces an array axis sharded over ``mesh_axes`` is cut into."""
        named = mesh_axes if isinstance(mesh_axes, tuple) else (() if mesh_axes is None else (mesh_axes,))
        return math.prod(self.mesh.shape[a] for a in named)

    @property
    def batch_shards(self) -> int:
        """How many pieces the batch is cut into (the product of the batch's mesh axes)."""
        return self.shards(self.mesh_spec((logical_names.BATCH,))[0])

    @property
    def batch_axes(self) -> tuple[str, ...]:
        """The mesh axes the batch is split over (e.g. ``("data", "fsdp")``)."""
        axes = self.mesh_spec((logical_names.BATCH,))[0]
        return axes if isinstance(axes, tuple) else (() if axes is None else (axes,))

    def describe(self) -> str:
        return describe(self.mesh)

    # ---- checks ---------------------------------------------------------------------------

    def check_batch_size(self, batch_size: int, key: str = "train.batch_size") -> None:
        n = self.batch_shards
        require(batch_size % n == 0,
                f"config key '{key}' ({batch_size}) must be divisible by the {n} batch shards of the mesh "
                f"({self.describe()}).")

    def check_eval_batches(self, task: Any) -> None:
        """Every evaluation batch of ``task`` must split over the batch shards: checked before the
        run starts, not at its first evaluation (reads the evaluation data once, unplaced).

        Raises:
          ConfigError: the first batch whose rows do not divide, in one sentence.
        """
        n = self.batch_shards
        for batch in task.eval_batches():
            rows = int(jax.tree.leaves(batch)[0].shape[0])
            require(rows % n == 0,
                    f"an evaluation batch of {rows} rows cannot be split into the {n} batch shards of the mesh "
                    f"({self.describe()}); choose evaluation sizes (train.eval_*) divisible by {n}, or another "
                    f"'parallel.mesh_shape'.")

    def check_variables(self, abstract_variables: Any) -> None:
        """Every sharded variable axis must divide evenly over its mesh axes (one sentence otherwise)."""
        shapes = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_variables))[0]
        specs = jax.tree.leaves(self.variable_axes, is_leaf=_is_spec)
        for (path, leaf), logical in zip(shapes, specs):
            for size, name, axes in zip(leaf.shape, logical, self.mesh_spec(logical)):
                n = self.shards(axes)
                if size % n:
                    axes_text = "x".join(axes) if isinstance(axes, tuple) else axes
                    raise ConfigError(
                        f"the model's '{name}' axis (size {size} in {_path(path)}) cannot be split over the {n} "
                        f"devices of mesh axis '{axes_text}'; choose a 'parallel.mesh_shape' whose '{axes_text}' "
                        f"size divides {size}, or change 'parallel.logical_axis_rules'.")

    # ---- state ----------------------------------------------------------------------------

    def logical_items(self, items: Any, tx: optax.GradientTransformation) -> Any:
        """Logical specs for ``TrainState.checkpoint_items()``: variables as declared, optimiser
        state by :func:`optimizer_specs`, everything else replicated."""
        axes = self.variable_axes or {}
        params_axes = axes.get("params") or jax.tree.map(lambda _: PartitionSpec(), items["params"])

        def declared(collection):
            return (axes[collection] if collection in axes
                    else jax.tree.map(lambda _: PartitionSpec(), items["model_state"][collection]))

        return {"step": PartitionSpec(), "rng": PartitionSpec(), "params": params_axes,
                "opt_state": optimizer_specs(tx, items["opt_state"], items["params"], params_axes),
                "model_state": {c: declared(c) for c in items["model_state"]}}

    def item_shardings(self, items: Any, tx: optax.GradientTransformation) -> Any:
        """``NamedSharding`` for each leaf of ``checkpoint_items()`` (concrete or abstract)."""
        logical = self.logical_items(items, tx)
        return jax.tree.map(lambda spec: NamedSharding(self.mesh, self.mesh_spec(spec)), logical, is_leaf=_is_spec)

    def abstract_state(self, create: Callable[[], Any], abstract: Any = None) -> Any:
        """``jax.eval_shape(create)`` with each leaf's target sharding attached (nothing allocated).

        ``abstract``: that ``jax.eval_shape(create)`` when the caller has it already (tracing a
        deep model's initialisation takes seconds); None: traced here.
        """
        abstract = jax.eval_shape(create) if abstract is None else abstract
        items = abstract.checkpoint_items()
        shardings = self.item_shardings(items, abstract.tx)
        return abstract.replace_items(jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), items, shardings))

    def init_state(self, create: Callable[[], Any], abstract: Any = None) -> Any:
        """``create()`` (a TrainState) computed straight into its shardings: no full copy on one device.

        On a one-device mesh the state is created exactly as without a mesh (op by op), so a
        single-device run gives the same numbers to the last bit. ``abstract``: see
        :meth:`abstract_state`.
        """
        abstract = self.abstract_state(create, abstract)
        shardings = jax.tree.map(lambda x: x.sharding, abstract.checkpoint_items())
        if self.mesh.size == 1:
            items = jax.device_put(create().checkpoint_items(), shardings)
        else:
            items = jax.jit(lambda: create().checkpoint_items(), out_shardings=shardings)()
        return abstract.replace_items(items)

    # ---- steps ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The rules and mesh under which the model's logical constraints take effect (while tracing)."""
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh), nn.logical_axis_rules(self.rules):
            yield

    def _traced_within(self, fn: Callable) -> Callable:
        def run(*args):
            with self.active():
                return fn(*args)
        return run

    def jit_train_step(self, train_step: Callable, state: Any) -> Callable:
        """``jax.jit(train_step)``: state in and out with ``state``'s shardings (donated), batch over
        the batch axes, metrics replicated (on a multi-device CPU mesh, wrapped in
        :class:`BoundedInFlight`)."""
        shardings = jax.tree.map(lambda x: x.sharding, state)
        step = jax.jit(self._traced_within(train_step), in_shardings=(shardings, self.batch_sharding),
                       out_shardings=(shardings, self.replicated), donate_argnums=0)
        on_cpu = self.mesh.devices.flat[0].platform == "cpu"
        return BoundedInFlight(step) if on_cpu and (self.mesh.size > 1 or jax.process_count() > 1) else step

    def jit_eval_step(self, eval_step: Callable, state: Any) -> Callable:
        """``jax.jit(eval_step)`` with the same shardings; metrics replicated."""
        shardings = jax.tree.map(lambda x: x.sharding, state)
        return jax.jit(self._traced_within(eval_step), in_shardings=(shardings, self.batch_sharding),
                       out_shardings=self.replicated)

    # ---- batches --------------------------------------------------------------------------

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch that this process's devices hold (all of them for one process).

        Raises:
          ConfigError: the mesh gives this process rows that are not one contiguous block.
        """
        index = self.batch_sharding.devices_indices_map((batch_size,))
        spans = sorted({index[d][0].indices(batch_size)[:2] for d in self.mesh.local_devices})
        require(all(a[1] == b[0] for a, b in zip(spans, spans[1:])),
                f"the mesh ({self.describe()}) gives process {jax.process_index()} batch rows that are not one "
                f"block; put the 'data' and 'fsdp' axes first across processes.")
        return slice(spans[0][0], spans[-1][1])

    def place(self, batch: dict) -> dict:
        """A numpy batch (the global one, or this process's rows of it) as global arrays over the batch axes."""
        if jax.process_count() == 1:
            for x in jax.tree.leaves(batch):
                require(x.shape[0] % self.batch_shards == 0,
                        f"a batch of {x.shape[0]} rows cannot be split into the {self.batch_shards} batch shards of "
                        f"the mesh ({self.describe()}); choose a batch size divisible by {self.batch_shards}.")
            return jax.device_put(batch, self.batch_sharding)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x)),
                            batch)

    def batch_readers(self, task: Any) -> tuple[Callable[[int], dict], Callable[[], Iterator[dict]]]:
        """``(train_batch(step), eval_batches())`` of ``task`` yielding placed global batches.

        In a multi-process run each process reads only its own rows when the task can
        (``task.batch_rows``, whose evaluation batches then have the training batch size);
        otherwise it reads the whole batch and keeps its rows.
        """
        multi = jax.process_count() > 1
        reads_rows = multi and bool(getattr(task, "batch_rows", False)) and self.batch_size is not None
        rows = self.local_rows(self.batch_size) if reads_rows else None

        def own(batch: dict) -> dict:
            if not multi or reads_rows:
                return batch
            mine = self.local_rows(jax.tree.leaves(batch)[0].shape[0])
            return jax.tree.map(lambda x: x[mine], batch)

        def train_batch(step: int) -> dict:
            return self.place(own(task.train_batch(step, rows=rows) if reads_rows else task.train_batch(step)))

        def eval_batches() -> Iterator[dict]:
            batches = task.eval_batches(rows=rows) if reads_rows else task.eval_batches()
            return (self.place(own(b)) for b in batches)

        return train_batch, eval_batches


def optimizer_specs(tx: optax.GradientTransformation, opt_state: Any, params: Any, params_axes: Any) -> Any:
    """Logical specs for ``opt_state``, derived from Optax's own view of which parts of its
    state are trees over the parameters (``optax.tree_utils.tree_map_params``).

    A leaf shaped like its parameter (Adam's ``mu`` and ``nu``, momentum) takes the
    parameter's spec; a factored statistic (Adafactor's per-row ``v_row`` ``[..., rows]`` and
    per-column ``v_col`` ``[..., cols]``) takes the spec of the axes it keeps; any other
    leaf (counts, placeholders, scalars) is replicated.
    """
    shapes = jax.tree.map(lambda p: tuple(p.shape), params)

    def follow(leaf, spec, shape):
        spec = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
        if leaf.shape == shape:
            return PartitionSpec(*spec)
        if len(shape) >= 2 and leaf.shape == shape[:-1]:
            return PartitionSpec(*spec[:-1])
        if len(shape) >= 2 and leaf.shape == shape[:-2] + shape[-1:]:
            return PartitionSpec(*(spec[:-2] + spec[-1:]))
        return PartitionSpec()

    return optax.tree_utils.tree_map_params(
        tx, follow, opt_state, params_axes, shapes,
        transform_non_params=lambda tree: jax.tree.map(lambda _: PartitionSpec(), tree))


def variable_axes(init_variables: Callable[[jax.Array], Any]) -> tuple[Any, Any]:
    """(logical specs, abstract boxed variables) of ``init_variables(rng)``, computed abstractly."""
    boxed = jax.eval_shape(init_variables, jax.random.PRNGKey(0))
    return nn.get_partition_spec(boxed), boxed


def make_partitioner(config: ml_collections.ConfigDict, init_variables: Callable | None = None,
                     devices: list | None = None) -> Partitioner | None:
    """The partitioner ``config.parallel`` describes, or None when the config has no ``parallel`` group.

    Starts the multi-process run first if the config or environment names one, then checks
    that the mesh fits the devices, the batch fits the mesh and the variables (from
    ``init_variables``, which may return them boxed with logical names) fit the mesh.

    Raises:
      ConfigError: one sentence naming the value that does not fit.
    """
    parallel = config.get("parallel")
    if parallel is None:
        return None
    distributed.initialize(parallel)
    mesh = make_mesh(parallel.mesh_shape, devices)
    rules = parallel.get("logical_axis_rules", DEFAULT_RULES)
    axes, abstract = variable_axes(init_variables) if init_variables is not None else (None, None)
    train = config.get("train") or {}
    partitioner = Partitioner(mesh, rules, axes, batch_size=train.get("batch_size"), abstract_variables=abstract)
    if partitioner.batch_size:
        partitioner.check_batch_size(partitioner.batch_size)
    if abstract is not None:
        partitioner.check_variables(abstract)
    return partitioner
