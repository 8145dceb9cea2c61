"""lmc: loss landscapes through linear mode connectivity, in JAX.

The flat public API. Layers (README, "Architecture"): `lmc.core` (pure functions of
pytrees), `lmc.training` (models, data, trainer, checkpoints, run store), `lmc.workflows`
(analyses of checkpoints, returning typed records), and the `lmc` command and figures.
Masks and pruning criteria are `lmc.masks` and `lmc.prune`.
"""

from lmc._version import __version__
from lmc.constants import EXAMPLE_LOSS_THRESHOLD, MATCHING_TOLERANCE, STABILITY_THRESHOLD
from lmc.core import masks, prune
from lmc.core.alignment import (
    PermutationSpec,
    apply_permutation,
    random_permutation,
    spec_from_params,
    weight_matching,
)
from lmc.core.batching import batch_mean, batches_of, fixed_subset
from lmc.core.curvature import (
    Eigenpairs,
    SpectralDensity,
    TraceEstimate,
    directional_curvature,
    hutchinson_trace,
    hutchpp_trace,
    lambda_max_along_path,
    power_iteration,
    spectral_density,
    top_eigenpairs,
)
from lmc.core.evaluate import Evaluator, cross_entropy
from lmc.core.interpolate import (
    BARRIERS,
    PathEvaluator,
    alpha_grid,
    barriers,
    check_same_structure,
    connected_fractions,
    example_barriers,
    interpolation_record,
    lerp,
)
from lmc.core.masks import apply_mask, prunable
from lmc.core.operators import DenseOperator, HessianOperator, LinearOperator
from lmc.core.policy import ExecutionPolicy
from lmc.core.prune_ratio import ESTIMATORS, PrunePrediction, predict_prune_ratio
from lmc.core.scores import SCORES, el2n_scores, example_scores, grand_scores
from lmc.errors import CheckpointError, ConfigError, DataError, LmcError, TrainingDiverged
from lmc.plots import figures, plot_result, save_figure
from lmc.training.cache import CompilationCacheWarning, default_cache_dir, enable_compilation_cache
from lmc.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from lmc.training.config import OPTIMIZERS, SCHEDULES, Duration, TrainConfig
from lmc.training.data import DATASETS, Dataset, load_dataset
from lmc.training.models import (
    MODELS,
    apply_model,
    build_model,
    count_params,
    eval_apply,
    init_model,
    train_apply,
)
from lmc.training.rng import STREAMS
from lmc.training.runs import Run, RunSpec, train_run, train_runs
from lmc.training.subsets import Subset
from lmc.training.trainer import Trainer, TrainResult, TrainState, train
from lmc.workflows.imp import METHODS, ImpSettings, Method, register, run_imp
from lmc.workflows.instability import instability_analysis, pairwise_interpolations, spawn
from lmc.workflows.interpolation import interpolate_checkpoints, save_per_example_arrays
from lmc.workflows.opened import OpenedCheckpoint, open_checkpoint, open_data
from lmc.workflows.prune_ratio import AdaptiveFraction, prune_ratio_record
from lmc.workflows.records import (
    ImpRecord,
    ImpReplicatesRecord,
    InstabilityComparison,
    InstabilityRecord,
    InstabilityReplicatesRecord,
    InterpolationRecord,
    PruneRatioRecord,
    Record,
    ScoresRecord,
    SharpnessPathRecord,
    SharpnessRecord,
    load_record,
)
from lmc.workflows.replicates import replicate_imp, replicate_instability
from lmc.workflows.scores import data_scores, load_scores
from lmc.workflows.sharpness import path_sharpness_record, sharpness_record

__all__ = [
    "BARRIERS", "DATASETS", "ESTIMATORS", "EXAMPLE_LOSS_THRESHOLD", "MATCHING_TOLERANCE",
    "METHODS", "MODELS", "OPTIMIZERS",
    "SCHEDULES", "SCORES", "STABILITY_THRESHOLD", "STREAMS", "AdaptiveFraction", "Checkpoint",
    "CheckpointError", "CompilationCacheWarning", "ConfigError", "DataError", "Dataset",
    "DenseOperator", "Duration", "Eigenpairs", "Evaluator", "ExecutionPolicy", "HessianOperator",
    "ImpRecord", "ImpReplicatesRecord", "ImpSettings", "InstabilityComparison",
    "InstabilityRecord", "InstabilityReplicatesRecord",
    "InterpolationRecord", "LinearOperator", "LmcError", "Method", "OpenedCheckpoint",
    "PathEvaluator", "PermutationSpec", "PrunePrediction", "PruneRatioRecord", "Record", "Run",
    "RunSpec", "ScoresRecord", "SharpnessPathRecord", "SharpnessRecord", "SpectralDensity",
    "Subset",
    "TraceEstimate",
    "TrainConfig", "TrainResult", "TrainState", "Trainer", "TrainingDiverged", "__version__",
    "alpha_grid", "apply_mask", "apply_model", "apply_permutation", "barriers", "batch_mean",
    "batches_of", "build_model", "check_same_structure", "connected_fractions", "count_params",
    "cross_entropy", "example_barriers", "save_per_example_arrays",
    "data_scores", "el2n_scores", "example_scores", "grand_scores", "load_scores",
    "default_cache_dir", "directional_curvature", "enable_compilation_cache", "eval_apply",
    "figures", "fixed_subset", "hutchinson_trace", "hutchpp_trace", "init_model",
    "instability_analysis", "interpolate_checkpoints", "interpolation_record",
    "lambda_max_along_path", "lerp", "load_checkpoint", "load_dataset", "load_record", "masks",
    "open_checkpoint", "open_data", "pairwise_interpolations", "path_sharpness_record",
    "plot_result", "power_iteration", "predict_prune_ratio", "prunable", "prune",
    "prune_ratio_record", "random_permutation", "register", "replicate_imp",
    "replicate_instability", "run_imp", "save_checkpoint",
    "save_figure", "sharpness_record", "spawn", "spec_from_params", "spectral_density",
    "top_eigenpairs", "train", "train_apply", "train_run", "train_runs", "weight_matching",
]

