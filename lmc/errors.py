"""The one error family of lmc: anything a user can cause raises an `LmcError`.

The command line turns an `LmcError` into one readable line and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class LmcError(Exception):
    """A problem with the user's input, files or environment (not a bug in lmc)."""


class ConfigError(LmcError, ValueError):
    """An invalid setting: unknown name, out-of-range value, inconsistent options."""


class DataError(LmcError):
    """A data set that cannot be loaded (not prepared, offline, malformed)."""


class CheckpointError(LmcError):
    """A checkpoint file that is missing, truncated, foreign or incompatible."""


class TrainingDiverged(LmcError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def check_name(kind: str, name: str, valid: Iterable[str], plural: str | None = None) -> str:
    """Return `name` if it is one of `valid`, else raise a ConfigError listing them."""
    valid = sorted(valid)
    if name not in valid:
        raise ConfigError(f"unknown {kind} {name!r}; valid {plural or kind + 's'}: "
                          f"{', '.join(valid)}")
    return name
