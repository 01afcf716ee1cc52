"""Subcommands of the `bertjax` command line; each module has `add_arguments` and `run`."""

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Plain `LEVEL name: message` lines on stderr at `level` (INFO: evaluation lines too).

    absl (imported by orbax) may already have called `logging.basicConfig()` with its own
    format and the WARNING level, which would hide every INFO line: the level is set and that
    plain stderr handler gets this format in any case.
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=FORMAT)
    root.setLevel(level)
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:  # not a test's capturing handler
            handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("absl").setLevel(logging.WARNING)
