"""The playground's pages, in menu order.

A page is a module here with ``TITLE`` (menu entry), ``ICON`` (a Streamlit icon),
``URL`` (its address, ``/URL``) and ``render(settings: ui.Settings)``, which draws the page
by calling the package. Adding a chapter's page is one module plus its name in
:data:`PAGES`. (The folder is not called ``pages``: Streamlit would serve a ``pages/``
folder beside ``app.py`` as scripts of its own, past the navigation.)
"""

from __future__ import annotations

import importlib
from types import ModuleType

PAGES = ("home", "perceptron", "xor_mlp", "optimisers", "regularisation", "cnn", "batchnorm", "rnn", "attention",
         "transformer", "pointer")


def load(name: str) -> ModuleType:
    """The page module ``name`` (one of :data:`PAGES`)."""
    if name not in PAGES:
        raise KeyError(f"unknown page '{name}'; the pages are {', '.join(PAGES)}.")
    return importlib.import_module(f"{__name__}.{name}")
