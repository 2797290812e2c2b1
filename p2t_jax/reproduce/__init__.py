"""``p2t reproduce``: the whole arc in one command, into one report.

* ``chapters``: the eleven chapters (script, run folder, config, claim names) and the two
  budgets: ``full`` (each experiment's default config) and ``quick`` (small runs).
* ``references``: the paper's or the series' figure beside each claim.
* ``provenance``: the code's hash, git revision, machine line and versions.
* ``runner``: each chapter's experiment as a child process, resumable, side by side, one
  progress bar, signals forwarded.
* ``report``: ``REPORT.md`` and ``report.html`` (figures inline).
* ``command``: the subcommand's arguments and exit status.
"""
