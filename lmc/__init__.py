"""lmc: loss landscapes through linear mode connectivity, in JAX.

Masks and pruning criteria live in `lmc.prune` (`lmc.prune.prune`, `lmc.prune.scores`).
"""

__version__ = "0.1.0"

from lmc.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from lmc.config import OPTIMIZERS, SCHEDULES, Duration, TrainConfig
from lmc.data import DATASETS, Dataset, augment, batch_indices, get_batch, load_dataset
from lmc.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    LmcError,
    TrainingDiverged,
)
from lmc.evaluate import Evaluator, cross_entropy
from lmc.hessian import (
    HessianOperator,
    directional_curvature,
    hutchinson_trace,
    hutchpp_trace,
    power_iteration,
    spectral_density,
    top_eigenpairs,
)
from lmc.imp import run_imp
from lmc.instability import instability_analysis, pairwise_interpolations, spawn
from lmc.interpolate import (
    BARRIERS,
    PathEvaluator,
    alpha_grid,
    barriers,
    check_same_structure,
    interpolate_checkpoints,
    interpolation_record,
    lerp,
)
from lmc.models import MODELS, apply_model, build_model, count_params, init_model, prunable
from lmc.plots import plot_result
from lmc.predict import predict_prune_ratio, prune_ratio_record
from lmc.rng import STREAMS, noise_keys, stream_key
from lmc.runs import Run, RunSpec, ensure_checkpoint, mask_id, train_run, train_runs
from lmc.train import (
    Trainer,
    TrainResult,
    TrainState,
    apply_mask,
    eval_apply,
    learning_rate_schedule,
    make_optimizer,
    train,
)

__all__ = [
    "BARRIERS", "DATASETS", "MODELS", "OPTIMIZERS", "SCHEDULES", "STREAMS", "Checkpoint",
    "CheckpointError", "ConfigError", "DataError", "Dataset", "Duration", "Evaluator",
    "HessianOperator", "LmcError", "PathEvaluator", "Run", "RunSpec", "TrainConfig", "TrainResult",
    "TrainState", "Trainer", "TrainingDiverged", "alpha_grid", "apply_mask", "apply_model",
    "augment", "barriers", "batch_indices", "build_model", "check_same_structure", "count_params",
    "cross_entropy", "directional_curvature", "ensure_checkpoint", "eval_apply", "get_batch",
    "hutchinson_trace", "hutchpp_trace", "init_model", "instability_analysis",
    "interpolate_checkpoints", "interpolation_record", "learning_rate_schedule", "lerp",
    "load_checkpoint", "load_dataset", "make_optimizer", "mask_id", "noise_keys",
    "pairwise_interpolations", "plot_result", "power_iteration", "predict_prune_ratio", "prunable",
    "prune_ratio_record", "run_imp", "save_checkpoint", "spawn", "spectral_density", "stream_key",
    "top_eigenpairs", "train", "train_run", "train_runs",
]
