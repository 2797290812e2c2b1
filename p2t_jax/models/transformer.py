"""A decoder-only Transformer (GPT style): pre-LayerNorm blocks, causal self-attention.

Shapes use single-letter suffixes: B batch, T length (query), S length (key), D model
width, H heads, K head width (D = H*K), F MLP width, V vocabulary.

Every parameter carries logical axis names (``vocab``, ``embed``, ``heads``, ``kv``,
``mlp``) and the activations names of their own (``activation_batch``, ...), both through
:mod:`p2t_jax.models.logical`; ``p2t_jax.parallel`` maps those names onto a device mesh.
Without a mesh they change nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from p2t_jax.models import logical
from p2t_jax.models.attention import ATTENTION_BLOCK, MultiHeadAttention, causal_mask  # noqa: F401 (causal_mask: re-exported)
from p2t_jax.models.dense import project
from p2t_jax.models.dropout import Dropout

Dtype = Any
DENSE_IMPLS = ("auto", "rows", "general")
# What a rematerialised block keeps for the backward pass (jax.checkpoint policies): "full" keeps
# only its input and recomputes the rest; "dots_saveable" also keeps the projections' and the
# MLP's matmul outputs (dots without batch dimensions) and recomputes the attention scores,
# softmax, GELU and LayerNorms.
REMAT_POLICIES = {"none": None, "full": None,
                  "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the model (a frozen dataclass, so modules stay hashable).

    Attributes:
      vocab_size: V, number of token ids.
      max_len: the context: the most positions the model reads at once.
      emb_dim: D, the residual stream width.
      num_heads: H; must divide ``emb_dim``.
      num_layers: number of Transformer blocks.
      mlp_dim: F, hidden width of the MLP (usually 4 * D).
      dropout_rate: dropout on attention weights and on each residual branch (a number, or a
        traced scalar where a sweep varies it: :class:`p2t_jax.models.dropout.Dropout`).
      use_bias: biases in Dense layers and LayerNorms (nanoGPT's recipe turns them off).
      tie_embeddings: the output head reuses the token embedding matrix.
      gelu_approximate: tanh-approximate GELU (as GPT-2) instead of the exact erf form.
      dtype: compute dtype (``float32`` or ``bfloat16``); parameters stay float32, and the
        attention softmax is float32 whatever this is.
      output_dtype: dtype of the final LayerNorm and the output head's matmul; the logits
        are returned in float32 either way, so the loss is computed in float32.
      scan_layers: run the blocks with ``nn.scan`` (one compiled block, parameters stacked
        along a leading layer axis under ``blocks``) so compile time stays flat with depth.
      dense_impl: how the projections run: ``rows`` (on ``[B*T, D]`` rows through
        :class:`p2t_jax.models.dense.Dense`, whose weight gradients are plain matmuls: the
        faster kernels on XLA-CPU), ``general`` (``nn.DenseGeneral`` on ``[B, T, D]``, as GPUs
        and TPUs want) or ``auto`` (``rows`` when ``jax.default_backend()`` is the CPU,
        else ``general``). The parameters are the same either way, so checkpoints move
        between backends.
      remat: a key of :data:`REMAT_POLICIES`: ``none`` keeps every block's activations for the
        backward pass; ``full`` and ``dots_saveable`` recompute them (``nn.remat`` on each
        block, scanned or not), trading compute for memory. The numbers are the same.
      attention_impl: the fused attention's kernel (:func:`p2t_jax.models.attention.dot_product_attention`):
        ``auto`` (cuDNN's in the code lowered for a CUDA GPU in half precision, the blocked
        attention in the code lowered for a CPU from context
        :data:`p2t_jax.models.attention.BLOCKED_FROM` on, XLA's elsewhere; decided for the
        platform the step is lowered for), ``xla``, ``cudnn`` or ``blocked``
        (:mod:`p2t_jax.models.blocked_attention`: memory linear in the context).
      attention_block: positions per block of the blocked attention.
    """

    vocab_size: int
    max_len: int
    emb_dim: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    dropout_rate: float = 0.0
    use_bias: bool = True
    tie_embeddings: bool = False
    gelu_approximate: bool = False
    dtype: Dtype = jnp.float32
    output_dtype: Dtype = jnp.float32
    scan_layers: bool = False
    dense_impl: str = "auto"
    remat: str = "none"
    attention_impl: str = "auto"
    attention_block: int = ATTENTION_BLOCK

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.num_heads

    @property
    def resolved_dense_impl(self) -> str:
        """``rows`` or ``general``: ``dense_impl`` with ``auto`` decided by the default backend."""
        if self.dense_impl not in DENSE_IMPLS:
            raise ValueError(f"dense_impl must be one of {', '.join(DENSE_IMPLS)}, got {self.dense_impl!r}.")
        if self.dense_impl == "auto":
            return "rows" if jax.default_backend() == "cpu" else "general"
        return self.dense_impl


def _init(axes: tuple, stddev: float = 0.02, init=None):
    return logical.param(init or nn.initializers.normal(stddev), axes)


def _layer_norm(cfg: TransformerConfig, name: str, dtype: Dtype = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, use_bias=cfg.use_bias, dtype=dtype or cfg.dtype, name=name,
                        scale_init=_init(("embed",), init=nn.initializers.ones),
                        bias_init=_init(("embed",), init=nn.initializers.zeros))


@jax.custom_jvp
def gelu_exact(x: jax.Array) -> jax.Array:
    """GELU with the exact normal CDF: ``x * Phi(x)``, ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``.

    The same function as ``nn.gelu(x, approximate=False)``, with its derivative written out
    (``Phi(x) + x * phi(x)``) so that the backward pass reuses one ``erf`` and one ``exp``
    instead of differentiating through ``erfc``: on XLA-CPU this halves the MLP's backward time.
    """
    return x * _normal_cdf(x)


def _normal_cdf(x: jax.Array) -> jax.Array:
    return 0.5 * (1.0 + jax.lax.erf(x * 0.7071067811865476))


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    cdf = _normal_cdf(x)
    pdf = jnp.exp(-0.5 * x * x) * 0.3989422804014327  # 1 / sqrt(2 pi)
    return x * cdf, (cdf + x * pdf) * t


# The MLP's GELU under ``jax.checkpoint``: for the backward pass it keeps only its input
# ``[N, F]`` and recomputes its derivative there (one ``erf`` and one ``exp``, elementwise).
# Left to autodiff, the linearisation also keeps ``Phi(x)`` and ``x * phi(x)`` (tanh's terms
# for the approximate form): two more ``[N, F]`` arrays per block, the step's largest
# activations (``bench/NOTES.md``, change 17). Same values and gradients.
_gelu_exact_saving_input = jax.checkpoint(gelu_exact)
_gelu_tanh_saving_input = jax.checkpoint(lambda x: nn.gelu(x, approximate=True))


def CausalSelfAttention(cfg: TransformerConfig, name: str | None = None) -> MultiHeadAttention:  # noqa: N802
    """The block's multi-head causal self-attention: :class:`p2t_jax.models.attention.MultiHeadAttention`
    configured from ``cfg`` (parameters ``qkv`` ``[D, 3, H, K]`` and ``out`` ``[H, K, D]``, the
    key/value cache for decoding, the weights sown into ``intermediates``)."""
    return MultiHeadAttention(num_heads=cfg.num_heads, head_dim=cfg.head_dim, out_features=cfg.emb_dim, causal=True,
                              max_len=cfg.max_len, dropout_rate=cfg.dropout_rate, use_bias=cfg.use_bias,
                              dtype=cfg.dtype, kernel_init=nn.initializers.normal(0.02),
                              out_kernel_init=nn.initializers.normal(0.02 / (2 * cfg.num_layers) ** 0.5),
                              dense_impl=cfg.resolved_dense_impl,
                              attention_impl=cfg.attention_impl, attention_block=cfg.attention_block, name=name)


class MLP(nn.Module):
    """Position-wise ``D -> F -> D`` with GELU. Input and output ``[B, T, D]``.

    With ``dense_impl="rows"`` (the default on CPU) the matmuls run on ``[N, D]`` with N = B*T:
    with 2-D operands XLA-CPU computes the weight gradients without materialising transposed
    activations (measured in ``bench/NOTES.md``: the MLP's forward + backward 2.6x faster),
    and :class:`p2t_jax.models.dense.Dense` makes those gradients plain matmuls (~7% more).
    """

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array, *, deterministic: bool) -> jax.Array:
        cfg = self.cfg
        rows = cfg.resolved_dense_impl == "rows"
        B, T, D = x_BTD.shape
        # rows: [N, D] from the first matmul to the last, GELU included (measured: 2-D all the way is
        # faster on XLA-CPU than folding and unfolding around each projection)
        x = x_BTD.reshape(B * T, D) if rows else x_BTD
        h = project(x, cfg.mlp_dim, rows=rows, use_bias=cfg.use_bias, dtype=cfg.dtype, name="fc",
                    kernel_init=_init(("embed", "mlp")), bias_init=_init(("mlp",), init=nn.initializers.zeros))
        h = _gelu_tanh_saving_input(h) if cfg.gelu_approximate else _gelu_exact_saving_input(h)
        h = logical.constrain(h, (logical.BATCH, logical.MLP) if rows else logical.BTF)
        out = project(h, cfg.emb_dim, rows=rows, use_bias=cfg.use_bias, dtype=cfg.dtype, name="proj",
                      kernel_init=_init(("mlp", "embed"), 0.02 / (2 * cfg.num_layers) ** 0.5),
                      bias_init=_init(("embed",), init=nn.initializers.zeros))
        return out.reshape(B, T, D) if rows else out


class Block(nn.Module):
    """Pre-LN block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``. ``[B, T, D] -> [B, T, D]``."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array, deterministic: bool, decode: bool = False) -> jax.Array:
        cfg = self.cfg
        drop = Dropout(cfg.dropout_rate)
        h = CausalSelfAttention(cfg, name="attn")(_layer_norm(cfg, "ln1")(x_BTD), deterministic=deterministic,
                                                   decode=decode)
        x_BTD = x_BTD + drop(h, deterministic=deterministic)
        h = MLP(cfg, name="mlp")(_layer_norm(cfg, "ln2")(x_BTD), deterministic=deterministic)
        x_BTD = x_BTD + drop(h, deterministic=deterministic)
        return logical.constrain(x_BTD, logical.BTD)


def _rematerialised(module: type[nn.Module], cfg: TransformerConfig, static_argnums: tuple = ()) -> type[nn.Module]:
    """``module`` under ``nn.remat`` with ``cfg.remat``'s policy (``module`` itself for ``none``)."""
    if cfg.remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {', '.join(REMAT_POLICIES)}, got {cfg.remat!r}.")
    if cfg.remat == "none":
        return module
    # inside nn.scan the loop already keeps XLA from merging the recomputation away
    return nn.remat(module, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                    static_argnums=static_argnums)


class _ScannedBlock(nn.Module):
    """A Block in the ``(carry, x) -> (carry, y)`` form that ``nn.scan`` needs."""

    cfg: TransformerConfig
    deterministic: bool
    decode: bool

    @nn.compact
    def __call__(self, x_BTD: jax.Array, _) -> tuple[jax.Array, None]:
        return Block(self.cfg, name="block")(x_BTD, deterministic=self.deterministic, decode=self.decode), None


class Transformer(nn.Module):
    """Decoder-only language model.

    Call with ``tokens_BT`` (``int32[B, T]``, T <= max_len) and get next-token logits
    ``float32[B, T, V]``: position t sees tokens 0..t only.

    With ``decode=True`` the call continues the sequence held in the ``cache`` collection
    (create it with ``init(..., decode=True)`` on a ``[B, max_len]`` input and apply with
    ``mutable=["cache"]``): the T new tokens take positions ``index .. index + T - 1``.
    The caller keeps ``index + T <= max_len`` (see :mod:`p2t_jax.sampling`).
    """

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens_BT: jax.Array, *, deterministic: bool = True, decode: bool = False) -> jax.Array:
        cfg = self.cfg
        B, T = tokens_BT.shape
        if T > cfg.max_len:
            raise ValueError(f"input length {T} exceeds the model's context of {cfg.max_len}.")
        embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, name="token_embed",
                         embedding_init=_init(("vocab", "embed")))
        pos_table = self.param("pos_embed", _init((None, "embed")), (cfg.max_len, cfg.emb_dim))
        if decode and self.has_variable("cache", "position"):
            position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
            pos_TD = jax.lax.dynamic_slice_in_dim(pos_table, position.value, T, axis=0)
            position.value = position.value + T
        else:
            if decode:  # creating the cache
                self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
            pos_TD = pos_table[:T]
        x_BTD = (embed(tokens_BT) + pos_TD[None]).astype(cfg.dtype)
        x_BTD = logical.constrain(x_BTD, logical.BTD)
        x_BTD = Dropout(cfg.dropout_rate)(x_BTD, deterministic=deterministic)
        if cfg.scan_layers:
            blocks = nn.scan(_rematerialised(_ScannedBlock, cfg), variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                             split_rngs={"params": True, "dropout": True}, length=cfg.num_layers,
                             metadata_params={nn.PARTITION_NAME: None})
            x_BTD, _ = blocks(cfg, deterministic, decode, name="blocks")(x_BTD, None)
        else:
            block = _rematerialised(Block, cfg, static_argnums=(2, 3))  # (self, x, deterministic, decode)
            for i in range(cfg.num_layers):
                x_BTD = block(cfg, name=f"block_{i}")(x_BTD, deterministic, decode)
        out = jnp.dtype(cfg.output_dtype)
        x_BTD = _layer_norm(cfg, "ln_f", out)(x_BTD).astype(out)
        if cfg.tie_embeddings:
            logits_BTV = (embed.attend(x_BTD) if out == jnp.float32  # (attend promotes to the float32 table)
                          else x_BTD @ embed.embedding.astype(out).T)
        else:
            logits_BTV = nn.Dense(cfg.vocab_size, use_bias=cfg.use_bias, dtype=out, name="head",
                                  kernel_init=_init(("embed", "vocab")),
                                  bias_init=_init(("vocab",), init=nn.initializers.zeros))(x_BTD)
        logits_BTV = logical.constrain(logits_BTV, logical.BTV)
        return logits_BTV.astype(jnp.float32)
