"""The lmc cache directory (`$LMC_CACHE_DIR`, default `~/.cache/lmc`) and JAX's persistent
compilation cache in it.

The cache directory holds the data sets (`data/`, unless `$LMC_DATA_DIR` says otherwise)
and, where it is enabled, the compiled programs (`jax_cache/`). The `lmc` command enables
the compilation cache by default; library users call `enable_compilation_cache()`
themselves (or set JAX's own options).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import warnings

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

CACHE_DIR_ENV = "LMC_CACHE_DIR"
COMPILATION_CACHE_ENV = "LMC_COMPILATION_CACHE"  # 0, false, no or off: the CLI compiles afresh
_OFF = ("0", "false", "no", "off")

# JAX's warnings about a cache entry it cannot read or write (it compiles instead).
JAX_CACHE_WARNINGS = r"Error (reading|writing) persistent compilation cache"


class CompilationCacheWarning(UserWarning):
    """The compilation cache directory cannot be used; programs are compiled without it."""


def default_cache_dir() -> pathlib.Path:
    """`$LMC_CACHE_DIR`, else `~/.cache/lmc`."""
    env = os.environ.get(CACHE_DIR_ENV)
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache/lmc"


def default_compilation_cache_dir() -> pathlib.Path:
    """`jax_cache/` in the lmc cache directory."""
    return default_cache_dir() / "jax_cache"


def compilation_cache_switched_off() -> bool:
    """Whether `$LMC_COMPILATION_CACHE` turns the command line's cache off (0/false/no/off)."""
    return os.environ.get(COMPILATION_CACHE_ENV, "").strip().lower() in _OFF


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in `path` (default
    `default_compilation_cache_dir()`), for every program however quick to compile, so that
    a later process loads what an earlier one compiled. Call it before the computations it
    should cover. Returns the directory, or None, with a `CompilationCacheWarning`, where
    it cannot be created or written (JAX then compiles as without a cache).

    JAX itself only warns about an entry it cannot read or write, and compiles instead.
    The cache is not bounded in size; delete the directory to reclaim the space.
    """
    root = pathlib.Path(path).expanduser() if path is not None else default_compilation_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        warnings.warn(f"cannot use the compilation cache at {root} ({e}); compiling without it",
                      CompilationCacheWarning, stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(root))
    # Most of a command's programs compile in well under JAX's default threshold of 1 s;
    # together they are most of its first-call time.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # A cache JAX already opened elsewhere in this process would otherwise stay in use.
    _jax_cache.reset_cache()
    return root
