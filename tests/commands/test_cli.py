"""The `bertjax` command itself: `--version`, what start-up imports, the compilation cache."""

import os
import subprocess
import sys

import pytest

import bertjax
from bertjax import cli


def _python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("JAX_")}, **env},
    )
    return result.stdout


def test_version_and_help_import_no_jax(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bertjax {bertjax.__version__}"
    # in a fresh interpreter: --help and `embed --help` parse without importing jax or numpy
    code = (
        "import sys\nfrom bertjax import cli\n"
        "for argv in (['--help'], ['--version'], ['embed', '--help']):\n"
        "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('jax', 'numpy', 'flax') if m in sys.modules))"
    )
    assert _python(code).splitlines()[-1] == "[]"


def test_compile_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("BERTJAX_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.compile_cache_dir() == tmp_path / "bertjax" / "jax"
    monkeypatch.setenv("BERTJAX_COMPILE_CACHE", "off")
    assert cli.compile_cache_dir() is None
    # a command's compiled programs land in the folder, even the quick ones (CPU compiles are fast)
    cache = tmp_path / "cache"
    code = (
        "from bertjax import cli\ncli.enable_compile_cache()\nimport jax\n"
        "jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)).block_until_ready()"
    )
    _python(code, BERTJAX_COMPILE_CACHE=str(cache))
    assert any(p.name.startswith("jit__lambda") for p in cache.iterdir())
