"""Inputs in buckets (`bertjax.storage`), against a local S3 server (moto's) on 127.0.0.1."""

import pathlib
import shutil

import numpy as np
import pytest

from bertjax import storage
from bertjax.config import load_config, resolve_path
from bertjax.data.run_data import open_sources
from bertjax.interop import model_dir
from bertjax.models.bert import BertConfig
from bertjax.training import pretrain as pretrain_lib
from tests.conftest import REPO, S3_SECRET

pytest.importorskip("s3fs")


def test_a_model_in_a_bucket_is_copied_whole_through_the_cache(s3, tmp_path):
    cfg = BertConfig(vocab_size=8, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(
        "".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
    )
    local = tmp_path / "model"
    model_dir.save_model(local, model_dir.init_params(cfg, heads=(), seed=0), cfg, vocab)
    s3.put(str(local), "bertjax-test/model", recursive=True)
    url = "s3://bertjax-test/model"
    copy = resolve_path(url)
    files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
    for name in files:
        assert (copy / name).read_bytes() == (local / name).read_bytes(), name
    # a second host read fetches nothing; a changed object is fetched again
    stamp = (copy / "vocab.txt").stat().st_mtime_ns
    assert storage.local_copy(url) == copy and (copy / "vocab.txt").stat().st_mtime_ns == stamp
    s3.pipe("bertjax-test/model/vocab.txt", b"changed\n")
    assert (storage.local_copy(url) / "vocab.txt").read_text() == "changed\n"
    s3.rm("bertjax-test/model/vocab.txt")  # and a deleted one leaves the copy
    assert not (storage.local_copy(url) / "vocab.txt").exists()


def test_a_missing_object_is_one_line_naming_the_url(s3):
    with pytest.raises(FileNotFoundError, match=r"^s3://bertjax-test/nothing: no such object"):
        resolve_path("s3://bertjax-test/nothing")


def test_prepared_data_in_a_bucket_reads_as_the_local_data(s3, prepared, tmp_path):
    """`config.data.dir` and `config.data.vocab` in a bucket: each host reads its cached copy."""
    local = load_config(REPO / "configs" / "test.py", prepared)
    s3.put(local.data.dir, "bertjax-test/prepared", recursive=True)
    s3.put(local.data.vocab, "bertjax-test/vocab.txt")
    remote = load_config(
        REPO / "configs" / "test.py",
        [
            *prepared,
            "--config.data.dir=s3://bertjax-test/prepared",
            "--config.data.vocab=s3://bertjax-test/vocab.txt",
        ],
    )
    data_dir, vocab = pretrain_lib.prepare_data(remote, tmp_path)
    assert data_dir.is_relative_to(storage.cache_root()) and vocab.read_bytes() == (
        pathlib.Path(local.data.vocab).read_bytes()
    )
    want = open_sources(local, pathlib.Path(local.data.dir), pathlib.Path(local.data.vocab))
    got = open_sources(remote, data_dir, vocab)
    for a, b in zip(want, got, strict=True):
        assert len(a) == len(b)
        for index in (0, len(a) - 1):
            for key, value in a[index].items():
                np.testing.assert_array_equal(value, b[index][key])


def test_an_unreachable_bucket_is_one_line_after_bounded_retries_and_loses_nothing(
    s3, tmp_path, monkeypatch, capsys
):
    """A workdir's bucket that stops answering: the push fails after `ATTEMPTS` tries with one
    line naming the object, the bucket keeps what it had, the staging folder keeps the rest, and
    the next run (bucket reachable again) uploads it instead of dropping it."""
    import fsspec
    import s3fs

    from bertjax import cli
    from bertjax.training import workdir as workdir_lib

    url = "s3://bertjax-test/unreachable/run"
    with workdir_lib.staged(url) as local:
        (local / "metrics.jsonl").write_text('{"step": 1}\n')
    assert s3.cat(f"{url}/metrics.jsonl") == b'{"step": 1}\n'

    live = dict(fsspec.config.conf["s3"])
    dead = {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}}
    monkeypatch.setitem(fsspec.config.conf, "s3", dead)
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # the client's own retries, for speed
    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)
    mirror = storage.Mirror(url)
    (mirror.local / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    with pytest.raises(storage.BucketError) as caught:
        mirror.push()
    assert str(caught.value).startswith(f"{url}/metrics.jsonl: upload failed 3 times: ")
    assert "\n" not in str(caught.value) and S3_SECRET not in str(caught.value)
    # the command line: one line naming the URL, exit status EXIT_UNREACHABLE, no traceback
    argv = ["predict", "s3://bertjax-test/unreachable/model", "--text", "a"]
    assert cli.main(argv) == storage.EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith("bertjax predict: stopped: s3://bertjax-test/unreachable/model: ")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

    monkeypatch.setitem(fsspec.config.conf, "s3", live)  # reachable again
    assert s3.cat(f"{url}/metrics.jsonl") == b'{"step": 1}\n'  # nothing lost in the bucket
    assert storage.Mirror(url).pull() == 0  # the bucket is as left: the newer copy goes up
    s3.invalidate_cache()
    assert s3.cat(f"{url}/metrics.jsonl") == b'{"step": 1}\n{"step": 2}\n'


def test_a_missing_model_in_a_bucket_is_one_line(s3, capsys):
    from bertjax import cli

    assert cli.main(["predict", "s3://bertjax-test/no-model", "--text", "a"]) == 2
    err = capsys.readouterr().err
    assert (
        err == "bertjax predict: error: s3://bertjax-test/no-model: no such object in the bucket\n"
    )


def test_a_staged_workdir_uploads_its_checkpoints_last_and_ignores_one_cut_off(s3):
    """An s3:// workdir (staged checkpoints): its files, its lock object and its checkpoints go
    up (the metadata file last), a checkpoint cut off mid-upload is ignored by the next pull, and
    a model folder reads back whole."""
    from bertjax.training import workdir as workdir_lib

    url = "s3://bertjax-test/staged-run"
    with workdir_lib.staged(url) as local:
        assert s3.exists(f"{url}/.bertjax.lock")
        (local / "metrics.jsonl").write_text('{"step": 2}\n')
        (local / "checkpoints" / "2" / "state").mkdir(parents=True)
        (local / "checkpoints" / "2" / "state" / "shard").write_bytes(b"\1" * 1000)
        (local / "checkpoints" / "2" / storage.COMPLETE).write_text("{}")
        (local / "model").mkdir()
        (local / "model" / "config.json").write_text('{"family": "bert"}')
    s3.invalidate_cache()
    assert not s3.exists(f"{url}/.bertjax.lock")
    assert s3.cat(f"{url}/checkpoints/2/state/shard") == b"\1" * 1000
    s3.pipe(f"{url}/checkpoints/4/state/shard", b"half")  # an upload cut off: no metadata file
    shutil.rmtree(storage.staging_dir(url).parent)  # another host: an empty staging folder
    mirror = storage.Mirror(url)
    assert mirror.pull() == 4
    got = [p.relative_to(mirror.local).as_posix() for p in mirror.local.rglob("*") if p.is_file()]
    assert sorted(got) == [
        "checkpoints/2/_CHECKPOINT_METADATA",
        "checkpoints/2/state/shard",
        "metrics.jsonl",
        "model/config.json",
    ]
    assert not (mirror.local / "checkpoints" / "4").exists()
    model = storage.input_path(f"{url}/model")
    assert (model / "config.json").read_text() == '{"family": "bert"}'


def test_a_bucket_workdir_in_use_is_refused_naming_its_owner(s3):
    """The lock object's conditional create (S3 If-None-Match) refuses a second run."""
    import os
    import re

    from bertjax.training import workdir as workdir_lib

    url = "s3://bertjax-test/locked/run"
    with workdir_lib.staged(url):
        mirror = storage.Mirror(url)
        owner = rf"^{re.escape(url)} is in use by another bertjax run \(pid {os.getpid()} on "
        with pytest.raises(ValueError, match=owner):
            workdir_lib.claim_bucket(mirror.fs, mirror.url, mirror.root)
    assert not s3.exists(f"{url}/.bertjax.lock")
    # orbax writes no s3:// checkpoints itself: a job of several processes is refused at once
    with pytest.raises(ValueError, match=r"^--workdir s3://.*this job has 2 processes"):
        with workdir_lib.staged(url, 0, 2):
            pass
    assert not s3.exists(f"{url}/.bertjax.lock")


def test_a_config_error_leaves_nothing_in_the_bucket(s3, capsys):
    from bertjax import cli

    url = "s3://bertjax-test/config-error/run"
    argv = ["pretrain", "--config", str(REPO / "configs" / "test.py"), "--workdir", url]
    assert cli.main([*argv, "--config.train.global_batch_size=0"]) == 2
    assert "global_batch_size=0" in capsys.readouterr().err
    s3.invalidate_cache()
    assert not s3.exists(url) and not s3.find(url)  # no lock, no log, no folder


def test_checkpoints_of_a_gcs_workdir_are_written_by_orbax_straight_to_the_bucket(gcs):
    """In a gs:// workdir orbax (tensorstore's gcs driver) writes the checkpoints itself, as it
    does on a TPU pod where every process writes its shards; the mirror leaves them alone."""
    import jax.numpy as jnp

    from bertjax.training import checkpoints
    from bertjax.training import workdir as workdir_lib

    url, state = "gs://bertjax-gcs/native", {"w": jnp.arange(8.0), "b": jnp.ones((2, 3))}
    options = {"keep": 2, "async_save": False}
    with workdir_lib.staged(url) as local:
        assert gcs.exists(f"{url}/.bertjax.lock")  # gcsfs, against the emulator
        manager = checkpoints.checkpoint_manager(local / "checkpoints", options)
        assert str(manager.directory) == f"{url}/checkpoints"
        manager.save(
            3, args=checkpoints.ocp.args.Composite(state=checkpoints.ocp.args.StandardSave(state))
        )
        manager.close()
        (local / "metrics.jsonl").write_text('{"step": 3}\n')
    gcs.invalidate_cache()
    assert not gcs.exists(f"{url}/.bertjax.lock")
    assert gcs.exists(f"{url}/checkpoints/3/{storage.COMPLETE}") and gcs.exists(
        f"{url}/metrics.jsonl"
    )
    assert not (storage.staging_dir(url) / "checkpoints").exists()
    with workdir_lib.staged(url) as local:  # a rerun: the staging folder gets no checkpoint
        assert sorted(p.name for p in local.iterdir()) == ["metrics.jsonl"]
        manager = checkpoints.checkpoint_manager(local / "checkpoints", options)
        assert manager.all_steps() == [3]
        args = checkpoints.ocp.args.Composite(state=checkpoints.ocp.args.StandardRestore(state))
        restored = manager.restore(3, args=args)["state"]
        manager.close()
    assert (restored["w"] == state["w"]).all() and restored["b"].shape == (2, 3)
