"""Subcommands of the `bertjax` command line; each module has `add_arguments` and `run`."""

import logging


def setup_logging(level: int = logging.INFO) -> None:
    """Plain `LEVEL name: message` lines on stderr, once per process."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
