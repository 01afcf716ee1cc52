"""Test setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# gcsfs >= 2026.3 asks the Storage Control gRPC API whether each bucket is hierarchical or zonal
# (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT, on by default); a GCS emulator speaks no gRPC, so every
# probe waits out a 60 s gRPC timeout (fsspec/gcsfs#843; datachain-ai/datachain#1829 opts out
# the same way). gcsfs reads the switch when imported: set here, before anything imports it.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import json  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def data_dir() -> pathlib.Path:
    """The shared real-data folder: $BERTJAX_DATA or ../shared/data beside the repo."""
    return pathlib.Path(os.environ.get("BERTJAX_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set BERTJAX_DATA)")
    return path


# configs/test.py at length 32: small enough for CPU tests, long enough for real NSP pairs.
SMALL_PRETRAINING = [
    "--config.data.max_seq_len=32",
    "--config.data.max_predictions=5",
    "--config.data.eval_fraction=0.05",
    "--config.train.eval_batches=2",
]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> list[str]:
    """Overrides pointing configs/test.py at a vocabulary and instances made once per test run
    from the built-in corpus (Python's reference documentation)."""
    from bertjax.config import load_config
    from bertjax.training.pretrain import BUILTIN_CORPUS, prepare_data

    workdir = tmp_path_factory.mktemp("prepared")
    corpus = f"--config.data.corpus={BUILTIN_CORPUS}"
    config = load_config(REPO / "configs" / "test.py", [*SMALL_PRETRAINING, corpus])
    data_dir, vocab = prepare_data(config, workdir)
    size = len(vocab.read_text().splitlines())
    return [
        *SMALL_PRETRAINING,
        f"--config.data.dir={data_dir}",
        f"--config.data.vocab={vocab}",
        f"--config.model.vocab_size={size}",
    ]


# An uninterrupted 24-step run of configs/test.py (checkpoints at 8, 16, 24): the losses the
# kill-and-resume tests end on (tests/training/test_reliability.py, test_pretrain.py).
STRAIGHT = ["--config.train.num_steps=24", "--config.train.log_every=1"]
STRAIGHT += ["--config.train.eval_every=0", "--config.checkpoint.every_steps=8"]


def once_per_run(tmp_path_factory, name: str, make):
    """`make()` (a JSON value) once per test run: under pytest-xdist the first worker to ask
    makes it while the others wait on a file lock, then read the JSON it wrote."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make()
    from filelock import FileLock

    path = tmp_path_factory.getbasetemp().parent / f"{name}.json"  # shared by the workers
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            path.write_text(json.dumps(make()))
        return json.loads(path.read_text())


@pytest.fixture(scope="session")
def straight_losses(prepared, tmp_path_factory) -> dict[int, float]:
    """{step: loss} of the STRAIGHT run on `prepared`'s data (deterministic: the same data and
    losses whichever worker prepares it), made in-process once per test run."""
    from bertjax.config import load_config
    from bertjax.training.pretrain import pretrain

    def make():
        workdir = tmp_path_factory.mktemp("straight")
        pretrain(load_config(REPO / "configs" / "test.py", [*prepared, *STRAIGHT]), workdir)
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return [[r["step"], r["loss"]] for r in records if "loss" in r]

    return dict(map(tuple, once_per_run(tmp_path_factory, "straight_losses", make)))


S3_KEY_ID, S3_SECRET = "BERTJAXTESTKEY51", "bertjax-test-secret-6c1f2e9a"  # never in any output


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """An S3 server (moto's) on 127.0.0.1 with the bucket `bertjax-test`, fsspec and the
    environment (inherited by subprocesses) pointed at it; one per test session."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": f"http://{host}:{port}",
        "BERTJAX_CACHE": str(tmp_path_factory.mktemp("cache")),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        import fsspec  # already imported (orbax): its FSSPEC_* settings were read then

        patch.setitem(fsspec.config.conf, "s3", {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"]})
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bertjax-test")
        yield fs
    server.stop()


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A GCS emulator (gcp-storage-emulator, in memory) on 127.0.0.1 with the bucket
    `bertjax-gcs`, and gcsfs and tensorstore pointed at it without credentials; one per test
    session. It runs in a process of its own: its one-request-at-a-time server then answers the
    jobs' processes while this one is busy (in-process it stalled a 2-process job's save)."""
    pytest.importorskip("gcp_storage_emulator.server")
    pytest.importorskip("gcsfs")
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # its CLI, with a server that answers requests in parallel: its stdlib HTTPServer serves one
    # connection at a time, so one client's open keep-alive connection stalls the others
    # (python/cpython bpo-31639; the same fix as emscripten-core/emscripten#24748)
    script = "import http.server as h; h.HTTPServer = h.ThreadingHTTPServer; import runpy; "
    script += "runpy.run_module('gcp_storage_emulator', run_name='__main__')"
    command = [sys.executable, "-c", script, "start", f"--port={port}", "--host=127.0.0.1"]
    command += ["--in-memory", "--default-bucket=bertjax-gcs"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "emulator down"
            time.sleep(0.1)
    env = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",  # gcsfs's emulator setting
        "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{port}",  # tensorstore's (orbax)
        "NO_GCE_CHECK": "true",  # google-auth: no metadata-server probe
        "FSSPEC_GS_TOKEN": "anon",  # gcsfs in subprocesses (this one: fsspec.config below)
        "GCE_METADATA_ROOT": "metadata.google.internal.invalid",  # tensorstore's: none either
        "BERTJAX_CACHE": str(tmp_path_factory.mktemp("gcs-cache")),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        import fsspec

        patch.setitem(fsspec.config.conf, "gs", {"token": "anon"})
        yield fsspec.filesystem("gs", skip_instance_cache=True)
    server.terminate()
    server.wait(timeout=10)
