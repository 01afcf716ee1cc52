"""Subcommands of the `bertjax` command line; each module has `add_arguments` and `run`."""

import logging
import os

FORMAT = "%(levelname)s %(name)s: %(message)s"


class LibraryTracebacks(logging.Filter):
    """Keeps the tracebacks that orbax and asyncio log from background threads off the terminal.

    orbax's writer threads log each failed write with its traceback (`_SignalingThread.run()
    raised an exception`) and asyncio logs the reads that orbax abandons after a failed restore
    (`Task exception was never retrieved`). The same errors reach bertjax as exceptions (a failed
    save is re-raised by `check_for_errors`, a failed restore by `restore`), which the command
    reports in one line; the workdir's log.txt still gets every record in full.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname
        abandoned = record.name == "asyncio" and "never retrieved" in str(record.msg)
        log_only = getattr(record, "log_only", False)  # e.g. errors met while closing a failed run
        return not (record.exc_info and from_orbax) and not abandoned and not log_only


def setup_logging(level: int = logging.INFO) -> None:
    """Plain `LEVEL name: message` lines on stderr at `level` (INFO: evaluation lines too),
    without the library tracebacks of `LibraryTracebacks`.

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
            if not any(isinstance(f, LibraryTracebacks) for f in handler.filters):
                handler.addFilter(LibraryTracebacks())
    logging.getLogger("absl").setLevel(logging.WARNING)


def add_strict_utf8(parser) -> None:
    """`--strict-utf8` (the CLI runs the command under `bertjax.data.text.utf8_policy`)."""
    parser.add_argument(
        "--strict-utf8",
        action="store_true",
        help="refuse input files with invalid UTF-8, naming file:line:column (default: repair "
        "it as U+FFFD and report the repaired lines per file)",
    )
