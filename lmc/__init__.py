"""lmc: loss landscapes through linear mode connectivity, in JAX."""

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
from lmc.models import MODELS, apply_model, build_model, count_params, init_model, prunable
from lmc.rng import STREAMS, noise_keys, stream_key
from lmc.runs import Run, RunSpec, mask_id, train_run, train_runs
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
    "DATASETS", "MODELS", "OPTIMIZERS", "SCHEDULES", "STREAMS",
    "Checkpoint", "CheckpointError", "ConfigError", "DataError", "Dataset", "Duration",
    "Evaluator", "LmcError", "Run", "RunSpec", "TrainConfig", "TrainResult", "TrainState",
    "Trainer", "TrainingDiverged",
    "apply_mask", "apply_model", "augment", "batch_indices", "build_model", "count_params",
    "cross_entropy", "eval_apply", "get_batch", "init_model", "learning_rate_schedule",
    "load_checkpoint", "load_dataset", "make_optimizer", "mask_id", "noise_keys", "prunable",
    "save_checkpoint", "stream_key", "train", "train_run", "train_runs",
]
