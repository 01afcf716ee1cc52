"""Multi-process runs: `jax.distributed.initialize` from `config.distributed`, and a local launcher.

One code path serves one process and many: every process runs the same job, loads only its own
slice of each global batch, and joins the others in the jitted steps and in orbax checkpoints.
`initialize` must run before anything touches a device. It either leaves JAX single-process
(mode "none"), lets JAX detect the cluster (mode "auto": TPU pod slices, SLURM, Open MPI), or
connects to the coordinator named in the config (mode "explicit").

JAX's coordination service sends heartbeats between the processes: when one dies, the others stop
within `config.distributed.heartbeat_timeout` seconds instead of waiting in a collective forever.
Rerunning the same command then resumes from the last complete checkpoint.

`launch` starts N local processes with K fake CPU devices each (what `bertjax launch` runs), so
the multi-process path is exercised on one machine without a pod.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import jax

log = logging.getLogger(__name__)

MODES = ("none", "auto", "explicit")
CPU_COLLECTIVES = ("gloo", "mpi")
CLI = (sys.executable, "-m", "bertjax.cli")  # how `launch` starts a bertjax command


def validate(dist: Mapping[str, Any]) -> None:
    """Checks `config.distributed`; raises ValueError naming the field and the allowed values."""
    if dist["mode"] not in MODES:
        raise ValueError(
            f"config.distributed.mode={dist['mode']!r} is invalid: allowed values are {MODES}"
        )
    if dist["cpu_collectives"] not in CPU_COLLECTIVES:
        raise ValueError(
            f"config.distributed.cpu_collectives={dist['cpu_collectives']!r} is invalid: "
            f"allowed values are {CPU_COLLECTIVES}"
        )
    for name in ("initialization_timeout", "heartbeat_timeout", "shutdown_timeout"):
        if not isinstance(dist[name], int) or dist[name] < 1:
            raise ValueError(
                f"config.distributed.{name}={dist[name]!r}: must be a positive number of seconds"
            )
    if dist["mode"] != "explicit":
        return
    host, _, port = str(dist["coordinator_address"]).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"config.distributed.coordinator_address={dist['coordinator_address']!r}: "
            "mode 'explicit' needs HOST:PORT of process 0"
        )
    count, index = dist["num_processes"], dist["process_id"]
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"config.distributed.num_processes={count!r}: must be a positive integer")
    if not isinstance(index, int) or not 0 <= index < count:
        raise ValueError(
            f"config.distributed.process_id={index!r} is out of range: must be in "
            f"[0, config.distributed.num_processes={count})"
        )


def initialize(dist: Mapping[str, Any]) -> None:
    """Joins the multi-process job that `config.distributed` describes (no-op for mode "none").

    Call once, before any device is used. Raises ValueError naming the setting when it is invalid
    or, for processes other than 0, when the coordinator cannot be reached within
    `initialization_timeout` seconds. A process 0 whose peers never arrive stops with a message
    naming the settings after that time (JAX would otherwise abort without naming them).
    """
    validate(dist)
    if dist["mode"] == "none" or jax.distributed.is_initialized():
        return
    timeout = dist["initialization_timeout"]
    kwargs = {}
    if dist["mode"] == "explicit":
        address = dist["coordinator_address"]
        kwargs = dict(
            coordinator_address=address,
            num_processes=dist["num_processes"],
            process_id=dist["process_id"],
        )
        if dist["process_id"] > 0:
            _wait_for_coordinator(address, timeout)
        what = (
            f"process {dist['process_id']} of config.distributed.num_processes="
            f"{dist['num_processes']} did not connect to "
            f"config.distributed.coordinator_address={address!r}"
        )
    else:
        what = "mode 'auto' could not set up the cluster (TPU pod, SLURM or Open MPI expected)"
    message = (
        f"bertjax: error: {what} within config.distributed.initialization_timeout={timeout} s; "
        "are all processes started with the same coordinator address?"
    )
    jax.config.update("jax_cpu_collectives_implementation", dist["cpu_collectives"])
    with _watchdog(timeout, message):
        # JAX gets a few seconds more, so that the watchdog's message (naming the settings) wins.
        jax.distributed.initialize(
            **kwargs,
            initialization_timeout=timeout + 10,
            heartbeat_timeout_seconds=dist["heartbeat_timeout"],
            shutdown_timeout_seconds=dist["shutdown_timeout"],
        )
    log.info(
        "process %d of %d: %d local devices of %d",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    if jax.process_index() > 0:  # progress is logged by process 0; the others log problems only
        logging.getLogger("bertjax").setLevel(logging.WARNING)


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Waits until `address` accepts TCP connections; ValueError naming the setting if it never does."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ValueError(
                    f"config.distributed.coordinator_address={address!r} cannot be reached "
                    f"({err}) within config.distributed.initialization_timeout={timeout} s; "
                    "start process 0 there or fix the address"
                ) from err
            time.sleep(0.25)


@contextlib.contextmanager
def _watchdog(seconds: float, message: str):
    """Ends the process with `message` (exit status 2) unless the block finishes in `seconds`."""

    def expire():
        print(message, file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# ----------------------------------------------------------------------------- local launcher


def free_port() -> int:
    """A TCP port that is free on this machine now (for the coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(devices_per_process: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a launched process: CPU platform with `devices_per_process` fake devices."""
    env = dict(os.environ if base is None else base)
    flags = [
        flag
        for flag in env.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count")
    ]
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return env


def launch(
    argv: Sequence[str],
    num_processes: int,
    *,
    devices_per_process: int = 1,
    command: Sequence[str] = CLI,
    out: IO[str] | None = None,
    grace_seconds: float = 10.0,
) -> int:
    """Runs `command + argv` as `num_processes` local processes of one multi-process job.

    Each process gets `--config.distributed.*` overrides (mode explicit, a free coordinator port
    on 127.0.0.1, its process id), CPU collectives and `devices_per_process` fake CPU devices. Its
    output lines are written to `out` prefixed with `[rank]`. When a process exits non-zero the
    others are terminated (SIGTERM, then SIGKILL after `grace_seconds`).

    Args:
      argv: the bertjax command and its arguments, e.g. `["pretrain", "--config", ...]`.
      num_processes: processes to start.
      devices_per_process: fake CPU devices per process.
      command: the program that takes `argv` (default `python -m bertjax.cli`).
      out: where the prefixed output goes (default stdout).
      grace_seconds: time between SIGTERM and SIGKILL when stopping the others.

    Returns:
      0 when every process succeeded, else the first non-zero exit status seen (a signal N as
      128 + N).
    """
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError(
            f"--num-processes={num_processes} and --devices-per-process={devices_per_process} "
            "must be positive"
        )
    out = out or sys.stdout
    address = f"127.0.0.1:{free_port()}"
    env = child_env(devices_per_process)
    lock = threading.Lock()
    processes, readers = [], []
    for rank in range(num_processes):
        flags = [
            "--config.distributed.mode=explicit",
            f"--config.distributed.coordinator_address={address}",
            f"--config.distributed.num_processes={num_processes}",
            f"--config.distributed.process_id={rank}",
        ]
        process = subprocess.Popen(
            [*command, *argv, *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # so that stopping the job reaches the process's children
        )
        reader = threading.Thread(target=_copy_lines, args=(process.stdout, rank, out, lock))
        reader.start()
        processes.append(process)
        readers.append(reader)
    try:
        status = _wait_all(processes)
    finally:
        _stop(processes, grace_seconds)
        for reader in readers:
            reader.join()
    return status


def _copy_lines(stream: IO[str], rank: int, out: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            out.write(f"[{rank}] {line}" if line.endswith("\n") else f"[{rank}] {line}\n")
            out.flush()


def _wait_all(processes: list[subprocess.Popen]) -> int:
    """Waits until all exit 0 (returns 0) or one exits non-zero (returns its status)."""
    while True:
        codes = [p.poll() for p in processes]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            code = failed[0]
            return code if code > 0 else 128 - code
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.1)


def _stop(processes: list[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM to the process groups still running, SIGKILL to those left after the grace time."""
    running = [p for p in processes if p.poll() is None]
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
