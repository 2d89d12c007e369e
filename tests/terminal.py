"""Command-line children started as a terminal starts them, so that a Ctrl-C (SIGINT) reaches them."""

from __future__ import annotations

import signal


def ctrl_c_reaches_the_child() -> None:
    """`preexec_fn` of a CLI subprocess: SIGINT back to its default disposition. A shell starts background jobs
    (and so a test run started with `&`, and every child of it) with SIGINT ignored, and Python then never turns
    Ctrl-C into KeyboardInterrupt; a user's foreground command always has it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
