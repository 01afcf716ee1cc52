"""`bertjax launch`: run a bertjax command as N local processes of one multi-process JAX job."""

from __future__ import annotations

import argparse
import signal
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-processes", type=int, required=True, help="processes to start on this machine"
    )
    parser.add_argument(
        "--devices-per-process", type=int, default=1, help="fake CPU devices per process"
    )
    parser.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the bertjax command to run, after --, e.g. -- pretrain --config ... --workdir ...",
    )
    parser.epilog = (
        "Each process gets --config.distributed.mode=explicit, a local coordinator, its process "
        "id, gloo CPU collectives and JAX_PLATFORMS=cpu; its output lines are prefixed [rank]. If "
        "one process fails the others are stopped and the launcher exits non-zero. Rerun the same "
        "command to resume from the last checkpoint."
    )


def run(args: argparse.Namespace) -> int:
    from bertjax.training.distributed import launch

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise ValueError("give the command after --, e.g. -- pretrain --config ... --workdir ...")
    # A terminated launcher stops its processes too (SystemExit runs launch's cleanup).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return launch(argv, args.num_processes, devices_per_process=args.devices_per_process)
