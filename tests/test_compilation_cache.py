"""The command line keeps compiled programs in `$LMC_CACHE_DIR/jax_cache` unless told not
to, and a cache it cannot use costs compile time only, never the command."""

from __future__ import annotations

import re
import warnings

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from lmc.cli import listing, main
from lmc.training.cache import (
    CompilationCacheWarning,
    default_cache_dir,
    enable_compilation_cache,
)
from lmc.training.data import default_data_dir

_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture(autouse=True)
def _restored_jax_cache():
    """Each test starts without a compilation cache; the one before it is restored after."""
    saved = {name: getattr(jax.config, name) for name in _OPTIONS}
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    jax_cache.reset_cache()


def _main_where_warnings_are_errors(argv, category, match):
    """`main(argv)` under `-W error`, which must show (not raise) a warning matching."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        code = main(argv)
    assert any(issubclass(w.category, category) and re.search(match, str(w.message))
               for w in caught), [str(w.message) for w in caught]
    return code


def _fresh_program():
    """A new jitted function each call, always the same program: compiled anew in this
    process (no in-memory hit), found in the persistent cache once written."""
    return jax.jit(lambda x: np.float32(3.0) * jax.numpy.sin(x) + 1.0)


def test_the_cli_enables_the_cache_in_the_lmc_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    assert main(["list"]) == 0
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax_cache")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    assert (tmp_path / "jax_cache").is_dir()


@pytest.mark.parametrize("argv, env", [
    (["--no-compilation-cache", "list"], None),
    (["list", "--no-compilation-cache"], None),
    (["list"], "0"),
    (["list"], "off"),
])
def test_the_cache_can_be_turned_off(monkeypatch, tmp_path, argv, env):
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    if env is not None:
        monkeypatch.setenv("LMC_COMPILATION_CACHE", env)
    assert main(argv) == 0
    assert jax.config.jax_compilation_cache_dir is None
    assert not (tmp_path / "jax_cache").exists()


def test_the_data_directory_follows_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("LMC_DATA_DIR")
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path and default_data_dir() == tmp_path / "data"
    monkeypatch.delenv("LMC_CACHE_DIR")
    assert default_data_dir() == default_cache_dir() / "data"
    assert default_cache_dir().parts[-2:] == (".cache", "lmc")
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"


def test_an_unusable_cache_directory_only_warns(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LMC_CACHE_DIR", str(blocker))
    assert _main_where_warnings_are_errors(["list"], CompilationCacheWarning,
                                           "compiling without it") == 0
    assert "resnet20" in capsys.readouterr().out
    assert jax.config.jax_compilation_cache_dir is None
    with pytest.warns(CompilationCacheWarning):
        assert enable_compilation_cache(blocker / "jax_cache") is None


def test_corrupt_or_unwritable_entries_only_warn(monkeypatch, tmp_path):
    """JAX warns about an entry it cannot read or write and compiles instead; under
    `-W error` (as the tests run) the command still succeeds."""
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "jax_cache"
    x = np.linspace(0.0, 1.0, 5, dtype=np.float32)
    results = []

    def compile_and_run(args):
        results.append(np.asarray(_fresh_program()(x)))

    monkeypatch.setattr(listing, "run", compile_and_run)
    assert main(["list"]) == 0
    entries = [p for p in cache.iterdir() if p.name.endswith("-cache")]
    assert entries  # the program was written
    for entry in entries:
        entry.write_bytes(b"not a compiled program")
    assert _main_where_warnings_are_errors(
        ["list"], UserWarning, "Error reading persistent compilation cache") == 0

    def unwritable_then_compile(args):
        for p in cache.iterdir():
            p.unlink()
        cache.rmdir()
        cache.write_text("in the way")  # the cache directory is gone: no entry can be written
        compile_and_run(args)

    monkeypatch.setattr(listing, "run", unwritable_then_compile)
    # JAX opens the cache at its first use: it warns that it cannot read, or write, there.
    assert _main_where_warnings_are_errors(
        ["list"], UserWarning, "Error (reading|writing) persistent compilation cache") == 0
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0])


def test_a_warm_cache_is_used(monkeypatch, tmp_path):
    """A program written by one 'process' is read by the next instead of compiled."""
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    x = np.ones(3, np.float32)
    assert enable_compilation_cache() == tmp_path / "jax_cache"
    _fresh_program()(x).block_until_ready()
    entries = sorted((tmp_path / "jax_cache").glob("*-cache"))
    assert entries
    stamps = [p.stat().st_mtime_ns for p in entries]
    jax_cache.reset_cache()
    _fresh_program()(x).block_until_ready()  # a hit: nothing rewritten
    assert sorted((tmp_path / "jax_cache").glob("*-cache")) == entries
    assert [p.stat().st_mtime_ns for p in entries] == stamps


def test_the_flag_is_no_argument_of_the_computation(monkeypatch):
    """Records and their default paths (a hash of the arguments) do not see the flag."""
    seen = []
    monkeypatch.setattr(listing, "run", lambda args: seen.append(vars(args)))
    assert main(["list"]) == 0
    assert main(["--no-compilation-cache", "list"]) == 0
    assert main(["list", "--no-compilation-cache"]) == 0
    assert seen[0] == seen[1] == seen[2] and "compilation_cache" not in seen[0]
