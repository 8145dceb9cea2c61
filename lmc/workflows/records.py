"""Typed result records: what every workflow returns and every figure and printer reads.

A record is a dataclass whose fields are the keys of its JSON file; nested values
(curves, barriers, per-level entries) are plain JSON values, documented on the field.
`to_json` adds the record's `kind` and `schema_version`; `from_json` reads files of this
version or older (files written before versions existed count as version 1) and refuses
newer ones, naming both versions. Keys a record does not know are kept in `extra`, so a
file annotated by a study survives a round trip.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from lmc.constants import STABILITY_THRESHOLD
from lmc.errors import LmcError
from lmc.files import write_json

SCHEMA_VERSION = 1


def _optional(default: Any = None) -> Any:
    """A field left out of the JSON while it is None (e.g. layer-wise barriers)."""
    return dataclasses.field(default=default, metadata={"optional": True})


def _in_memory() -> Any:
    """A field never written to the JSON (large arrays, e.g. per-example curves): None in
    a record read from a file."""
    return dataclasses.field(default=None, compare=False, repr=False,
                             metadata={"in_memory": True})


@dataclasses.dataclass
class Record:
    """Base of the result records; subclasses set `kind`."""

    kind: ClassVar[str] = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if f.name == "extra" or f.metadata.get("in_memory"):
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "record") -> Record:
        """The record of a JSON object written by `to_json` (this or an older version)."""
        if not isinstance(data, dict):
            raise LmcError(f"{source} does not hold a JSON object")
        if data.get("kind") != cls.kind:
            raise LmcError(f"{source} holds a {data.get('kind')!r} result, not {cls.kind!r}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise LmcError(f"{source} has schema version {version}; this lmc reads versions "
                           f"up to {SCHEMA_VERSION}: upgrade lmc")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise LmcError(f"{source} ({cls.kind}) lacks {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in fields}
        extra = {k: v for k, v in data.items()
                 if k not in fields and k not in ("kind", "schema_version")}
        return cls(**known, extra=extra)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record as JSON, atomically."""
        return write_json(path, self.to_json())


@dataclasses.dataclass
class InterpolationRecord(Record):
    """Loss and error along the straight line between two checkpoints."""

    kind: ClassVar[str] = "interpolation"
    a: str
    b: str
    model: dict[str, Any]  # the checkpoints' model description
    data: str
    bn: str  # "reset", "interpolate" or "none" (no BatchNorm)
    examples: dict[str, int]  # split -> examples evaluated
    alphas: list[float]
    curves: dict[str, dict[str, list[float]]]  # split -> {"loss", "error"} -> per α
    barriers: dict[str, dict[str, dict[str, float]]]  # split -> metric -> definition -> value
    # per top-level block: {"block", "only": {split: {metric: mean barrier}}, "all_but": ...}
    layerwise: list[dict[str, Any]] | None = _optional()
    # the pair after permuting B to match A (`interpolate_checkpoints(align=...)`):
    # {"method", "objective_before", "objective_after", "curves", "barriers"} (as above)
    aligned: dict[str, Any] | None = _optional()
    # the fractions of examples the path connects (`interpolate_checkpoints(per_example=True)`,
    # `lmc.core.interpolate.connected_fractions`): split -> {"examples", "loss_threshold",
    # "loss_connected", "error_connected"}
    per_example: dict[str, dict[str, Any]] | None = _optional()
    # the arrays behind them, not in the JSON (`save_per_example_arrays` writes an .npz):
    # split -> {"example_loss", "example_correct": (α, examples), "loss_barrier",
    # "error_barrier": (examples,)}
    per_example_arrays: dict[str, dict[str, Any]] | None = _in_memory()


@dataclasses.dataclass
class InstabilityRecord(Record):
    """Instability (test error barrier between children) against the spawn step k."""

    kind: ClassVar[str] = "instability"
    config: dict[str, Any]
    parents: list[str]
    children: int
    replicates: int
    sparse: bool
    density: float | None
    threshold: float
    alphas: list[float]
    dense_test_accuracy: float
    # per k: {"step", "error_barrier": summary, "child_test_accuracy": summary,
    #         "mean_curves": {split: {metric: per α}}, "pairs": [interpolation JSON + parent]}
    #         and, with `align`, "aligned_error_barrier": summary (each pair has "aligned")
    points: list[dict[str, Any]]
    # the permutation alignment of every pair ("weight", "activation"); None: naive only.
    # Left out of the JSON while None, so files without it read as before.
    align: str | None = _optional()


@dataclasses.dataclass
class InstabilityComparison(Record):
    """Several instability analyses drawn on one axis (e.g. with and without warmup)."""

    kind: ClassVar[str] = "instability_comparison"
    series: dict[str, dict[str, Any]]  # label -> {"dense_test_accuracy", "points"}
    threshold: float = STABILITY_THRESHOLD
    title: str = "Instability analysis"


@dataclasses.dataclass
class SharpnessRecord(Record):
    """Top eigenvalues, trace and optionally the spectral density of a loss Hessian."""

    kind: ClassVar[str] = "sharpness"
    checkpoint: str
    model: dict[str, Any]
    data: str
    split: str
    examples: int
    dim: int
    masked: bool
    block: list[str] | None
    seed: int
    top_eigenvalues: dict[str, Any]  # eigenvalues, residuals, converged, lanczos_steps, ...
    trace: dict[str, dict[str, float]]  # estimator -> {trace, standard_error, num_matvecs}
    density: dict[str, Any] | None = _optional()  # grid, density, nodes, weights, trace
    seconds: float = 0.0


@dataclasses.dataclass
class SharpnessPathRecord(Record):
    """λ_max and trace of the Hessian along the line between two checkpoints."""

    kind: ClassVar[str] = "sharpness_path"
    a: str
    b: str
    model: dict[str, Any]
    data: str
    bn: str
    examples: dict[str, int]
    alphas: list[float]
    curves: dict[str, dict[str, list[float]]]
    barriers: dict[str, dict[str, dict[str, float]]]
    split_hessian: str
    examples_hessian: int
    lanczos_steps: int
    lambda_max: list[float]
    trace: list[float]
    trace_standard_error: list[float]


@dataclasses.dataclass
class ImpRecord(Record):
    """IMP with rewinding and its baselines, level by level."""

    kind: ClassVar[str] = "imp"
    config: dict[str, Any]
    trunk: str
    rewind_step: int
    criterion: str
    keep_dense: list[str]
    fraction: float | None  # None: adaptive
    adaptive: bool
    tolerance: float
    dense_test_accuracy: float
    # method -> levels: {"level", "density", "test_accuracy", ..., "matching",
    #                    "successive_barrier" (IMP)}
    methods: dict[str, list[dict[str, Any]]]
    summary: dict[str, dict[str, Any]]
    adaptive_predictions: list[dict[str, Any]] | None = None
    # what chose an adaptive schedule's fractions (`AdaptiveFraction.settings`)
    adaptive_settings: dict[str, Any] | None = None
    predicted_max_sparsity: float | None = None
    seconds: float = 0.0


# An estimate over seeds (`lmc.workflows.replicates.estimate`): {"mean", "interval": [low,
# high] (Student-t, `confidence`), "std" (ddof 1), "n", "values": one per seed}; interval
# and std None for one seed.


@dataclasses.dataclass
class ImpReplicatesRecord(Record):
    """IMP run once per seed: every level of every method as estimates over seeds."""

    kind: ClassVar[str] = "imp_replicates"
    config: dict[str, Any]  # of the first seed
    seeds: list[int]
    rewind_step: int
    criterion: str
    fraction: float
    confidence: float  # of the intervals
    # {"value", "source": "measured" (factor × dense_std) or "given", "factor", "dense_std",
    #  "n"}: a level matches when its mean test accuracy >= mean dense − value
    tolerance: dict[str, Any]
    dense_test_accuracy: dict[str, Any]  # estimate
    # method -> levels by index: {"level", "density", "test_accuracy", "train_accuracy"
    # (estimates), "matching", "successive_barrier" (IMP): {"error", "error_chord",
    # "floor"} (estimates)}
    methods: dict[str, list[dict[str, Any]]]
    # method -> {"min_matching_density", "min_matching_level" (of the seed means), "levels",
    #            "per_seed": [{"seed", "min_matching_density", "min_matching_level"}]}
    summary: dict[str, dict[str, Any]]
    records: list[dict[str, Any]]  # every seed's ImpRecord JSON, in the order of seeds


@dataclasses.dataclass
class InstabilityReplicatesRecord(Record):
    """The instability analysis run once per seed (one parent each): per spawn step,
    estimates over seeds of each seed's mean over its pairs."""

    kind: ClassVar[str] = "instability_replicates"
    config: dict[str, Any]  # of the first seed
    seeds: list[int]
    children: int
    sparse: bool
    density: float | None
    threshold: float
    confidence: float  # of the intervals
    dense_test_accuracy: dict[str, Any]  # estimate
    # per k: {"step", "barrier": {"error", "error_chord", "floor"}, "child_test_accuracy"}
    # (estimates), with `align` also "aligned_barrier" (as "barrier")
    points: list[dict[str, Any]]
    records: list[dict[str, Any]]  # every seed's InstabilityRecord JSON
    align: str | None = _optional()


@dataclasses.dataclass
class PruneRatioRecord(Record):
    """The safe one-step pruning ratio of a checkpoint by estimators A, B and C."""

    kind: ClassVar[str] = "prune_ratio"
    checkpoint: str
    model: dict[str, Any]
    data: str
    split: str
    examples: int
    dim: int
    num_prunable: int
    masked: bool
    keep_dense: list[str]
    seed: int
    criterion: str
    loss: float
    gradient_norm: float
    epsilon: float
    epsilon_source: str
    lambda_max: float
    trace: float
    spectrum: dict[str, list]  # SLQ nodes and weights: C for another ε without new HVPs
    grid: list[float]
    # criterion -> curves over the grid and "safe": estimator -> {ratio, interpolated, status}
    criteria: dict[str, dict[str, Any]]
    diagnostics: dict[str, Any]
    seconds: float = 0.0
    # estimator C's choices (`lmc.core.prune_ratio`); the defaults are those of files
    # written before the choices existed: every live parameter, negative θ clipped to 0
    basis: str = "all"  # "prunable": dim == num_prunable; "all": dim counts biases too
    eigenvalues: str = "clip"
    batch_size: int | None = _optional()  # of the Hessian's batches (minibatch_std's)
    epsilon_detail: str | None = _optional()  # how ε was measured, in words
    zero_curvature_mass: float | None = _optional()  # SLQ weight on |θ| ≤ 1e-3·λ_max
    negative_mass: float | None = _optional()  # SLQ weight on θ < −1e-3·λ_max


@dataclasses.dataclass
class ScoresRecord(Record):
    """Per-example data scores (EL2N, GraNd) averaged over runs early in training; the
    per-example arrays are in the .npz `arrays` (format: `lmc.workflows.scores`)."""

    kind: ClassVar[str] = "scores"
    model: dict[str, Any]
    data: str
    num_train: int
    step: int | None  # training step of the checkpoints scored (None: they differ)
    runs: list[str]  # run ids of the trained runs (empty for checkpoints given as files)
    checkpoints: list[str]
    masked: bool  # GraNd of the live weights of pruned checkpoints
    chunk_size: int
    arrays: str  # the .npz of per-example scores
    # score -> {"mean", "std", "min", "max", "median", "q10", "q90", "run_std"} over examples
    # of the run-averaged scores; "run_std": the mean across-run standard deviation
    summary: dict[str, dict[str, float]]
    histograms: dict[str, dict[str, list[float]]]  # score -> {"edges", "counts"}
    rank_correlation: float  # Spearman's ρ between the run-averaged EL2N and GraNd
    config: dict[str, Any] | None = _optional()  # training config of the first run
    seconds: float = 0.0


RECORDS: dict[str, type[Record]] = {cls.kind: cls for cls in (
    InterpolationRecord, InstabilityRecord, InstabilityComparison, SharpnessRecord,
    SharpnessPathRecord, ImpRecord, PruneRatioRecord, ScoresRecord,
    ImpReplicatesRecord, InstabilityReplicatesRecord)}


def record_from_json(data: Any, source: str = "record") -> Record:
    """The typed record of a JSON object, by its kind."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in RECORDS:
        raise LmcError(f"{source} has unknown kind {kind!r}; valid kinds: "
                       f"{', '.join(sorted(RECORDS))}")
    return RECORDS[kind].from_json(data, source)


def load_record(path: str | os.PathLike) -> Record:
    """The typed record in a result JSON file; a clear error for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise LmcError(f"cannot read result file {path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmcError(f"result file {path} is not valid JSON: {e}") from e
    return record_from_json(data, f"result file {path}")
