"""The Streamlit script of the playground: ``streamlit run app.py -- --runs DIR`` (``p2t playground`` runs it).

It only sets up the navigation; every page is a module of :mod:`p2t_jax.playground.views`
rendered through :func:`p2t_jax.playground.ui.show_page`.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys

import streamlit as st

from p2t_jax.host_memory import keep_freed_host_memory
from p2t_jax.playground import ui, views


def parse_settings(argv: list[str]) -> ui.Settings:
    """``--runs DIR`` from the arguments after ``--`` (others are ignored)."""
    parser = argparse.ArgumentParser(prog="p2t playground", add_help=False)
    parser.add_argument("--runs", default="runs")
    args, _ = parser.parse_known_args(argv)
    return ui.Settings(runs_dir=pathlib.Path(args.runs))


def main(argv: list[str] | None = None) -> None:
    keep_freed_host_memory()  # the pages run compiled code over and over
    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    st.set_page_config(page_title="p2t playground", page_icon=":material/neurology:", layout="wide")
    modules = {name: views.load(name) for name in views.PAGES}
    links: dict = {}
    settings = ui.Settings(runs_dir=settings.runs_dir, links=links)
    for name, module in modules.items():
        links[name] = st.Page(functools.partial(ui.show_page, module.render, settings), title=module.TITLE,
                              icon=module.ICON, url_path=module.URL, default=name == views.PAGES[0])
    st.navigation(list(links.values())).run()


if __name__ == "__main__":
    main()
