"""Chapter 10: type a prompt, and a trained Transformer continues it, streamed as it is generated;
type a text, and see where each of its attention heads looks.

Loads a run folder as ``p2t sample`` does (:func:`restore`) and
generates with :func:`p2t_jax.sampling.generate_cached_padded`: the key/value cache, one
compilation for every prompt, length, temperature, top-k and top-p, each new character
handed to the page by the sampler's ``stream_fn`` as it is drawn. The attention weights come
from :func:`p2t_jax.chapters.transformer_attention.attention_maps` (one compilation per model).
"""

from __future__ import annotations

import json
import pathlib
import queue
import threading
import time

import jax
import numpy as np
import streamlit as st

from p2t_jax import runs, tasks
from p2t_jax.chapters.transformer_attention import attention_maps
from p2t_jax.playground import ui
from p2t_jax.sampling import generate_cached_padded
from p2t_jax.tasks import language_model
from p2t_jax.training.loop import restore_state
from p2t_jax.viz.transformer_figures import attention_heads

TITLE = "10 · Transformer"
ICON = ":material/chat:"
URL = "transformer"

MAX_PROMPT = 256  # prompt characters (the padded prompt's fixed size)
MAX_NEW = 1000  # most characters one request generates (a fixed size of the compiled sampler)
TRAIN = "p2t train --config configs/shakespeare.py:small --workdir {folder}"
REDRAW_S = 0.05  # the streamed text is redrawn at most this often
ATTENTION_TEXT = "ROMEO:\nBut soft, what light"


def language_model_runs(runs_dir: pathlib.Path) -> list[pathlib.Path]:
    """Run folders of ``p2t train`` with a tokenizer (language models) in ``runs_dir``, up to two levels down."""
    candidates = [runs_dir, *runs_dir.glob("*"), *runs_dir.glob("*/*")] if runs_dir.is_dir() else []
    return sorted(p for p in candidates if (p / "config.json").is_file() and (p / "tokenizer.json").is_file())


def _stamp(folder: pathlib.Path) -> float:
    """Changes when the run gets a new checkpoint, so that a retrained run is loaded afresh."""
    return max((p.stat().st_mtime for p in (folder / "checkpoints", folder / "best") if p.exists()), default=0.0)


def restore(workdir: str, best: bool):
    """``(config, model, TrainState)`` of a language-model run, loaded as ``p2t sample`` loads it."""
    config = runs.load_run(workdir)
    name = tasks.task_name(config)
    if not tasks.can_sample(name):
        raise ui.InputError(f"`{workdir}` holds a run of the '{name}' task, which does not generate text.")
    model = language_model.make_model(config)
    state, _ = restore_state(lambda rng: language_model.init_params(model, rng), config, workdir, best=best)
    return config, model, state


@st.cache_resource(show_spinner=False, max_entries=4)
def load_run(workdir: str, best: bool, stamp: float) -> dict:
    """The run's config, model, parameters, step and tokenizer (cached until the run changes)."""
    config, model, state = restore(workdir, best)
    return {"config": config, "model": model, "params": state.params, "step": int(state.step),
            "tokenizer": language_model.load_tokenizer(pathlib.Path(workdir)),
            "older": None if best else ui.newer_unreadable(workdir, int(state.step))}


class TokenStream:
    """The sampler's ``stream_fn``: one object for the life of the server (a static argument of
    the compiled sampler, so it must not change), handing each new token to the queue of the
    generation in progress. Generations take turns (``lock``)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queue: queue.Queue | None = None

    def __call__(self, i: int, tokens_B: np.ndarray) -> None:
        if self.queue is not None:
            self.queue.put(int(tokens_B[0]))


@st.cache_resource(show_spinner=False)
def token_stream() -> TokenStream:
    return TokenStream()


def generate(run: dict, prompt: str, *, num_new: int, temperature: float, top_k: int, top_p: float, seed: int,
             text_area, progress) -> tuple[str, float]:
    """Generates ``num_new`` characters after ``prompt``, redrawing ``text_area`` as they arrive.

    Returns:
      (the prompt and its continuation, as the sampler returned them; seconds taken).
    """
    tokenizer = run["tokenizer"]
    ids = tokenizer.encode(prompt)
    padded = np.zeros((1, MAX_PROMPT), np.int32)
    padded[0, :len(ids)] = ids
    stream, done, tokens = token_stream(), {}, queue.Queue()

    def work():
        # The worker, not the page, holds the stream: a page interrupted by a rerun lets its
        # generation finish here before the next one starts, so tokens never cross requests.
        with stream.lock:
            stream.queue = tokens
            try:
                out = generate_cached_padded(run["model"], run["params"], padded, len(ids), jax.random.PRNGKey(seed),
                                             num_new, temperature, top_k, top_p, max_new_tokens=MAX_NEW,
                                             stream_fn=stream)
                done["tokens"] = np.asarray(out)[0, :len(ids) + num_new]
                jax.effects_barrier()  # every token has been handed over
            except Exception as e:  # noqa: BLE001 - raised again in the page's thread below
                done["error"] = e
            finally:
                stream.queue = None
                tokens.put(None)

    start = time.perf_counter()
    threading.Thread(target=work, daemon=True).start()
    progress.progress(0.0, text="waiting for the first character (a model's first request compiles the sampler) ...")
    text, count, drawn = prompt, 0, 0.0
    while (token := tokens.get()) is not None:
        text += tokenizer.decode([token])
        count += 1
        if time.perf_counter() - drawn > REDRAW_S:
            text_area.code(text, language=None, wrap_lines=True)
            progress.progress(count / num_new, text=f"{count} / {num_new} characters")
            drawn = time.perf_counter()
    if "error" in done:
        raise done["error"]
    return tokenizer.decode(done["tokens"]), time.perf_counter() - start


def choose_folder(settings: ui.Settings) -> pathlib.Path | None:
    runs = language_model_runs(settings.runs_dir)
    typed = st.text_input("Run folder", value="", key="tf_typed",
                          placeholder="another run folder (leave empty to pick one below)").strip()
    if typed:
        return pathlib.Path(typed).expanduser()
    if not runs:
        ui.missing(f"No trained Transformer run in `{settings.runs_dir}`.",
                   TRAIN.format(folder=settings.runs_dir / "small"))
        return None
    return st.selectbox(f"Runs found in `{settings.runs_dir}`", runs, format_func=str, key="tf_run")


def render(settings: ui.Settings) -> None:
    controls, output = ui.layout(
        "The Transformer: continue a prompt",
        "A character-level Transformer trained by `p2t train`, sampled with the key/value cache. "
        "The text appears as the compiled loop draws it; every request after the first reuses the same "
        "compilation (`sampling.generate_cached_padded`).",
        (1, 2))
    with controls:
        folder = choose_folder(settings)
        if folder is None:
            return
        if not (folder / "config.json").is_file() or not (folder / "tokenizer.json").is_file():
            ui.missing(f"`{folder}` is not a run folder of a language model trained by `p2t train` "
                       "(it needs config.json and tokenizer.json).", TRAIN.format(folder=folder))
            return
        best = st.toggle("Best checkpoint (lowest validation loss)", value=False, key="tf_best",
                         disabled=not (folder / "best").is_dir())
        with st.spinner(f"Loading {folder} ..."):
            run = load_run(str(folder), best, _stamp(folder))
        ui.warn_if_older(run)
        prompt = st.text_area("Prompt", value="ROMEO:", max_chars=None, key="tf_prompt")
        num_new = ui.number("Characters to generate", 300, low=1, high=MAX_NEW, integer=True, key="tf_length")
        temperature = ui.number("Temperature (0: greedy)", 0.8, low=0.0, high=10.0, key="tf_temperature")
        top_k = ui.number("Top-k (0: all)", 40, low=0, high=run["tokenizer"].vocab_size, integer=True, key="tf_top_k")
        top_p = ui.number("Top-p", 1.0, low=0.0, high=1.0, low_inclusive=False, key="tf_top_p")
        seed = ui.number("Seed", 0, low=0, high=2**31 - 1, integer=True, key="tf_seed")
        summary = folder / "summary.json"
        val = json.loads(summary.read_text()).get("eval", {}).get("loss") if summary.is_file() else None
        n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(run["params"]))
        st.caption(f"`{run['config'].variant}`: {n_params:,} parameters, step {run['step']:,}, context "
                   f"{run['config'].model.max_len}" + (f", validation loss {val:.3f}" if val is not None else ""))

    with output, ui.errors_shown_here():  # a bad value here leaves the attention section below as it is
        ui.checked()
        if not prompt.strip():
            raise ui.InputError("The prompt is empty or only spaces; type at least one other character.")
        if len(prompt) > MAX_PROMPT:
            raise ui.InputError(f"The prompt has {len(prompt)} characters; the playground takes at most {MAX_PROMPT}.")
        bad = run["tokenizer"].unknown_chars(prompt)
        if bad:
            raise ui.InputError(f"The prompt holds {''.join(bad)!r}, which is not in the model's "
                                f"{run['tokenizer'].vocab_size}-character vocabulary.")
        text_area, progress = st.empty(), st.empty()
        first = not run.get("generated")  # the run's first request compiles the sampler
        text, seconds = generate(run, prompt, num_new=num_new, temperature=temperature, top_k=top_k, top_p=top_p,
                                 seed=seed, text_area=text_area, progress=progress)
        run["generated"] = True
        text_area.code(text, language=None, wrap_lines=True)
        progress.caption(f"{num_new} characters in {seconds:.2f} s ({num_new / seconds:,.0f} per second"
                         + (", the first request: it includes compiling)." if first else ")."))
    attention_section(run)


def attention_section(run: dict) -> None:
    """The attention weights of every head of one layer, for a text typed on the page."""
    tokenizer, context, layers = run["tokenizer"], run["config"].model.max_len, run["config"].model.num_layers
    st.subheader("Where the model looks")
    text_col, plot_col = st.columns([1, 2], gap="large")
    with text_col:
        text = st.text_area(f"Text (at most the context, {context} characters)", value=ATTENTION_TEXT[:context],
                            key="tf_attention_text")
        layer = st.slider("Layer", 1, layers, layers, key="tf_attention_layer") if layers > 1 else 1
        st.caption("Row t: how the character at t spreads its attention over itself and the characters before "
                   "it (the causal mask hides the rest).")
    if not text:
        raise ui.InputError("The attention text is empty; type at least one character.")
    if len(text) > context:
        raise ui.InputError(f"The attention text has {len(text)} characters; the model reads at most {context}.")
    bad = tokenizer.unknown_chars(text)
    if bad:
        raise ui.InputError(f"The attention text holds {''.join(bad)!r}, which is not in the model's "
                            f"{tokenizer.vocab_size}-character vocabulary.")
    maps = attention_maps(run["model"], run["params"], tokenizer.encode(text))
    ui.figure(attention_heads(maps[layer - 1], list(text), f"layer {layer} of {layers}: attention weights per head"),
              plot_col)
