"""What every benchmark shares: the machine description and writing its results (a JSON
with the numbers, and the markdown table drawn from them) atomically."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import jax

import lmc
from lmc.files import atomic_write, write_json


def package_version(name: str) -> str | None:
    """The installed version of a package that imports, else None."""
    try:
        __import__(name)
    except ImportError:
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine_info(**extra: Any) -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "jax": jax.__version__, "backend": jax.default_backend(),
        "device_kind": device.device_kind, "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "lmc": lmc.__version__, **extra,
    }


def write_results(out: Path, name: str, record: dict[str, Any], table: str) -> None:
    """`out/name.json` (the record) and `out/name.md` (the table); prints the table."""
    write_json(Path(out) / f"{name}.json", record)
    atomic_write(Path(out) / f"{name}.md", lambda f: f.write(table.encode()))
    print(table)
