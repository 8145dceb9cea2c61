"""Training on part of the training set, chosen by a per-example score.

Paul, Ganguli & Dziugaite 2021 ("Deep learning on a data diet") score every training
example early in training (EL2N: the norm of the error vector; GraNd: the norm of the
loss gradient) and train on the highest-scoring fraction: the hardest examples. A
`Subset` names that choice: the score, the fraction kept, which end of the ranking is
kept (or a random subset, the baseline), and the scores by content.

A run is identified by its scores' values, not by the file that holds them: `sha256` is
the digest of the score array used (as little-endian float64), so copies of a scores
file, a re-saved one or a deterministic re-run of `lmc scores` give the same run id,
while any change of the scores gives a new one. The file's path is kept (to load the
scores when the run trains) but is no part of the run id.

Scores files are the .npz files `lmc scores` writes: float arrays `el2n` and `grand`
(one score per training example, in the data set's training order), the scalar
`dataset`, and `num_train` and `labels`, which are checked when present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from lmc.core.scores import SCORES
from lmc.errors import ConfigError, DataError, check_name

ENDS = ("hardest", "easiest", "random")
SYNTAX = "END:KEEP:SCORE:FILE (e.g. hardest:0.5:el2n:scores.npz) or random:KEEP"
# Batch orders fold the epoch numbers 0, 1, ... into the data key (`lmc.training.data`);
# a random subset folds in the last uint32, an epoch no run reaches.
_RANDOM_FOLD = 2**32 - 1


@dataclass(frozen=True)
class Subset:
    """The training examples a run trains on: `round(keep * num_train)` of them.

    `score`: 'el2n' or 'grand' (a scores file's array), or 'random'. `end`: 'hardest'
    keeps the highest scores, 'easiest' the lowest (ties go to the lower index);
    'random' (with score 'random', and only with it) keeps a uniformly random subset
    drawn from the config's data stream, shared by siblings. `sha256`: digest of the
    scores used (`scores_digest`); `path`: the scores file, not compared or hashed.
    """

    score: str
    keep: float
    end: str
    sha256: str | None = None
    path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_name("subset score", self.score, (*SCORES, "random"))
        check_name("subset end", self.end, ENDS)
        _check_keep(self.keep)
        object.__setattr__(self, "keep", float(self.keep))  # 1 and 1.0 hash alike
        if (self.score == "random") != (self.end == "random"):
            raise ConfigError(f"a random subset is written random:KEEP, and a ranked one "
                              f"hardest or easiest with the score el2n or grand; got score "
                              f"{self.score!r} with end {self.end!r}")
        if self.score == "random":
            if self.sha256 is not None or self.path is not None:
                raise ConfigError("a random subset takes no scores file")
        elif not (isinstance(self.sha256, str) and len(self.sha256) == 64):
            raise ConfigError(f"a {self.end} subset needs the sha256 digest of its scores "
                              f"(64 hex digits), got {self.sha256!r}")

    @classmethod
    def from_file(cls, path: str | os.PathLike, score: str, keep: float, end: str) -> Subset:
        """A ranked subset of the `score` array in the scores file at `path`."""
        check_name("subset score", score, SCORES, "scores of a file")
        check_name("subset end", end, ENDS[:-1], "ends of a ranking")
        _check_keep(keep)
        values = read_scores(path, score).values
        return cls(score, keep, end, scores_digest(values), str(Path(path).resolve()))

    @classmethod
    def parse(cls, text: str) -> Subset:
        """A subset written `END:KEEP:SCORE:FILE` or `random:KEEP` (the --subset flag).

        The file comes last, so its path may hold colons. Reads the file (for its digest).
        """
        parts = text.split(":", 3)
        try:
            keep = float(parts[1]) if len(parts) > 1 else None
        except ValueError:
            keep = None
        if keep is None or len(parts) not in (2, 4) or not all(parts):
            raise ConfigError(f"cannot read subset {text!r}: write {SYNTAX}")
        if len(parts) == 2:
            if parts[0] != "random":
                check_name("subset end", parts[0], ENDS)
                raise ConfigError(f"a {parts[0]} subset needs a score and a scores file: "
                                  f"write {SYNTAX}")
            return cls("random", keep, "random")
        end, _, score, path = parts
        if end == "random":
            raise ConfigError(f"a random subset takes no score or file: write random:{parts[1]}")
        return cls.from_file(path, score, keep, end)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | str) -> Subset:
        """From `to_dict`'s form (a ranked subset without `sha256` reads it from `path`),
        or from the `parse` syntax."""
        if isinstance(values, str):
            return cls.parse(values)
        if not isinstance(values, dict):
            raise ConfigError(f"a subset is a dict or a string {SYNTAX}, got {values!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown subset field(s) {', '.join(unknown)}; valid fields: "
                              f"{', '.join(sorted(names))}")
        missing = [name for name in ("score", "keep", "end") if name not in values]
        if missing:
            raise ConfigError(f"a subset needs the field(s) {', '.join(missing)}")
        if values.get("sha256") is None and values.get("path") is not None:
            return cls.from_file(values["path"], values["score"], values["keep"], values["end"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """`to_dict` without the path: what a run id hashes."""
        out = self.to_dict()
        del out["path"]
        return out

    def size(self, num_train: int) -> int:
        """The number of examples kept of a training set of `num_train`."""
        return max(1, round(self.keep * num_train))

    def __str__(self) -> str:
        if self.score == "random":
            return f"random:{self.keep:g}"
        return f"{self.end}:{self.keep:g}:{self.score}:{self.path}"


def _check_keep(keep: Any) -> None:
    if not (isinstance(keep, (int, float)) and not isinstance(keep, bool)
            and math.isfinite(keep) and 0 < keep <= 1):
        raise ConfigError(f"the fraction of the training set kept must be in (0, 1], "
                          f"got {keep!r}")


class Scores(NamedTuple):
    """One score array of a scores file and what the file says it scores."""

    values: np.ndarray  # float64 (num_train,)
    dataset: str
    num_train: int | None
    labels: np.ndarray | None


def load_scores(path: str | os.PathLike) -> dict[str, Any]:
    """Every array of the scores file at `path`, read without pickle; the scalars
    "dataset" (str) and "num_train" (int), when present, as Python values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"scores file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("an .npy array, not an .npz archive")
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read scores file {path} ({e}); it is not an .npz "
                        f"written by `lmc scores`, or it is damaged") from None
    if "dataset" in arrays:
        arrays["dataset"] = str(arrays["dataset"])
    if "num_train" in arrays:
        arrays["num_train"] = int(arrays["num_train"])
    return arrays


def read_scores(path: str | os.PathLike, score: str) -> Scores:
    """The `score` array of the scores file at `path` (read without pickle)."""
    arrays = load_scores(path)
    for key in (score, "dataset"):
        if key not in arrays:
            raise DataError(f"scores file {path} has no {key!r} array (it holds "
                            f"{', '.join(sorted(arrays)) or 'nothing'}); write it with "
                            f"`lmc scores`")
    values, dataset = arrays[score], arrays["dataset"]
    num_train, labels = arrays.get("num_train"), arrays.get("labels")
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        raise DataError(f"the {score!r} scores in {path} must be a 1-d numeric array, got "
                        f"{values.dtype} of shape {values.shape}")
    values = values.astype("<f8")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"the {score!r} scores in {path} are not finite at {bad.size} "
                        f"example(s), the first at index {bad[0]}")
    return Scores(values, str(dataset), num_train, labels)


def scores_digest(values: np.ndarray) -> str:
    """sha256 of a score array as little-endian float64: a subset's identity."""
    return hashlib.sha256(np.ascontiguousarray(values, "<f8").tobytes()).hexdigest()


def ranked(values: np.ndarray, count: int, end: str) -> np.ndarray:
    """Sorted int32 indices of the `count` highest (`end` 'hardest') or lowest ('easiest')
    of `values`; among equal values the lower index is kept."""
    check_name("subset end", end, ENDS[:-1], "ends of a ranking")
    order = np.argsort(-values if end == "hardest" else values, kind="stable")
    return np.sort(order[:count]).astype(np.int32)


def select_examples(subset: Subset, dataset_name: str, labels: np.ndarray,
                    data_key: jax.Array) -> np.ndarray:
    """Sorted int32 indices of the training examples `subset` keeps.

    `labels`: the data set's training labels (its length is the training set's size);
    `data_key`: the config's data-stream key (before any sibling index is folded in),
    from which a random subset is drawn. A ranked subset reads its scores file and checks
    that it scores this data set in this order and holds the scores of `subset.sha256`.
    """
    n = int(labels.shape[0])
    count = subset.size(n)
    if subset.score == "random":
        order = jax.random.permutation(jax.random.fold_in(data_key, _RANDOM_FOLD), n)
        return np.sort(np.asarray(order)[:count]).astype(np.int32)
    if subset.path is None:
        raise ConfigError(f"the {subset.end} {subset.score} subset has no scores file to read")
    path = subset.path
    scores = read_scores(path, subset.score)
    if scores.dataset != dataset_name:
        raise ConfigError(f"scores file {path} scores the data set {scores.dataset!r}, not "
                          f"{dataset_name!r}")
    if scores.values.shape[0] != n or scores.num_train not in (None, n):
        raise ConfigError(f"scores file {path} holds {scores.values.shape[0]} {subset.score} "
                          f"scores, but {dataset_name} has {n} training examples")
    if scores.labels is not None and not np.array_equal(scores.labels, labels):
        raise ConfigError(f"the labels in scores file {path} differ from {dataset_name}'s "
                          f"training labels: its scores are of another training order")
    digest = scores_digest(scores.values)
    if digest != subset.sha256:
        raise ConfigError(f"the {subset.score} scores in {path} are not the ones the run was "
                          f"configured with (sha256 {digest[:12]}…, expected "
                          f"{subset.sha256[:12]}…); the run id names its scores by content")
    return ranked(scores.values, count, subset.end)


__all__ = ["ENDS", "Scores", "Subset", "ranked", "read_scores", "scores_digest",
           "select_examples"]
