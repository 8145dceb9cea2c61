"""Typed training configuration and durations written as `500it` or `160ep`."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from lmc.errors import ConfigError, check_name
from lmc.training.subsets import Subset

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "cyclic")

_DURATION = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


@dataclass(frozen=True)
class Duration:
    """A length of training in iterations (`500it`) or epochs (`160ep`)."""

    amount: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, text: str | int | Duration) -> Duration:
        if isinstance(text, Duration):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(text, "it")
        match = _DURATION.match(str(text))
        if not match:
            raise ConfigError(
                f"cannot read duration {text!r}: write iterations as '500it' or epochs as '160ep'"
            )
        return cls(int(match.group(1)), match.group(2))

    def steps(self, steps_per_epoch: int) -> int:
        return self.amount * steps_per_epoch if self.unit == "ep" else self.amount

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the result of a training run.

    Seeds are separate streams (Frankle et al. 2020 instability analysis needs children
    that share the initialisation but not the data order): each stream uses its own
    seed if given, else `seed`.
    """

    model: str = "conv1d"
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist1d"
    optimizer: str = "momentum"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    # L1 penalty l1 * sum|theta| added to the training loss, over the weights and biases
    # of the conv/dense layers (not norm scales/offsets): Zhang et al. 2024's sparsifying
    # regulariser. Omitted from `to_dict` when 0, so that older run ids stay valid.
    l1: float = 0.0
    schedule: str = "cosine"
    warmup: str = "0it"
    milestones: tuple[str, ...] = ()  # step schedule: where the LR is multiplied by gamma
    gamma: float = 0.1
    cycle: str = "8ep"  # cyclic schedule: first cycle length (Portes et al. 2022: t0)
    cycle_mult: float = 2.0  # cyclic schedule: cycle i lasts cycle * cycle_mult**i
    batch_size: int = 128
    duration: str = "6000it"
    augment: bool = True
    seed: int = 0
    init_seed: int | None = None
    data_seed: int | None = None
    augment_seed: int | None = None
    dropout_seed: int | None = None
    # Train on part of the training set only (Paul et al. 2021's data diet): see
    # `lmc.training.subsets`. Epochs are passes over the kept examples. Omitted from
    # `to_dict` when None, so that older run ids stay valid.
    subset: Subset | None = None

    def __post_init__(self) -> None:
        check_name("optimizer", self.optimizer, OPTIMIZERS)
        check_name("schedule", self.schedule, SCHEDULES)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not (isinstance(self.l1, (int, float)) and not isinstance(self.l1, bool)
                and math.isfinite(self.l1) and self.l1 >= 0):
            raise ConfigError(f"l1 penalty must be a finite number >= 0, got {self.l1}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ConfigError(f"batch size must be a positive integer, got {self.batch_size}")
        if self.gamma <= 0 or self.cycle_mult < 1:
            raise ConfigError("gamma must be > 0 and cycle_mult >= 1")
        for text in (self.warmup, self.duration, self.cycle, *self.milestones):
            Duration.parse(text)
        if Duration.parse(self.duration).amount <= 0:
            raise ConfigError(f"duration must be positive, got {self.duration!r}")
        if Duration.parse(self.cycle).amount <= 0:
            raise ConfigError(f"cycle length must be positive, got {self.cycle!r}")
        if self.subset is not None and not isinstance(self.subset, Subset):
            raise ConfigError(f"subset must be a Subset or None, got {self.subset!r}")
        # Canonical forms so that equal settings hash equally.
        milestones = tuple(str(Duration.parse(m)) for m in self.milestones)
        object.__setattr__(self, "milestones", milestones)
        object.__setattr__(self, "model_options", dict(sorted(self.model_options.items())))

    def seed_of(self, stream: str) -> int:
        own = getattr(self, f"{stream}_seed")
        return self.seed if own is None else own

    def examples_per_epoch(self, num_train: int) -> int:
        """Training examples one epoch passes over: the subset's, or all `num_train`."""
        return num_train if self.subset is None else self.subset.size(num_train)

    def total_steps(self, steps_per_epoch: int) -> int:
        return Duration.parse(self.duration).steps(steps_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        if self.l1 == 0:  # absent when off, so that run ids from before the field stay valid
            del out["l1"]
        if self.subset is None:  # likewise
            del out["subset"]
        return out

    def identity(self) -> dict[str, Any]:
        """`to_dict` without what locates the inputs but does not change the result (the
        path of a subset's scores file): what a run id hashes."""
        out = self.to_dict()
        if self.subset is not None:
            out["subset"] = self.subset.identity()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}; "
                f"valid fields: {', '.join(sorted(names))}"
            )
        values = dict(values)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        if values.get("subset") is not None:
            values["subset"] = Subset.from_dict(values["subset"])
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
