"""The playground: a Streamlit app over the package's own functions (``p2t playground``).

One page per chapter (:mod:`p2t_jax.playground.views`), each a module with ``TITLE``,
``ICON``, ``URL`` and ``render(settings)`` that calls the library (the chapter modules, the
figures of :mod:`p2t_jax.viz`, the sampler, the run loading that ``p2t sample`` uses,
:mod:`p2t_jax.runs`) and never re-implements a model, a step or a loss. :mod:`p2t_jax.playground.app` is the Streamlit
script, :mod:`p2t_jax.playground.launch` starts it. Streamlit is an optional extra
(``pip install -e '.[app]'``); nothing here imports it until a page is served.
"""
