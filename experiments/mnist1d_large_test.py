"""A larger MNIST-1D test set, drawn from the same generator, for studies whose
conclusions turn on one network's test accuracy.

MNIST-1D's test split has 1000 examples, so one accuracy near 63% carries a binomial
standard error of 1.5 points — as large as the differences the pruning studies compare
(see experiments/adaptive_imp_mnist1d.md). `large_test_dataset` returns lmc's MNIST-1D
with the test split replaced by `size` fresh examples of the same generative process
(`mnist1d.data.make_dataset`'s templates and transforms, another seed), scaled exactly as
the standard set: the generator's own normalisation constants of the standard 5000
examples, then lmc's standardisation with the training split's statistics. The training
split is unchanged, so runs trained on it are the standard ones; only their evaluation
is more precise. `check_reproduces_the_standard_set` verifies the construction: the same
loop with the standard seed gives lmc's cached arrays.

    python experiments/mnist1d_large_test.py    # builds and checks (about a minute)
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from lmc.files import atomic_write
from lmc.training.data import Dataset, default_data_dir, load_dataset

STANDARD_SEED = 42  # mnist1d's default, which lmc's MNIST-1D uses
LARGE_TEST_SEED = 1
LARGE_TEST_SIZE = 20_000


def _raw(seed: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """`make_dataset`'s examples before its normalisation (same loop, same draws)."""
    from mnist1d.data import get_dataset_args, get_templates
    from mnist1d.transform import transform
    from mnist1d.utils import set_seed

    args = get_dataset_args()
    args.seed, args.num_samples = seed, num_samples
    templates = get_templates()
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        set_seed(args.seed)
        xs, ys = [], []
        for label in range(len(templates["y"])):
            for _ in range(args.num_samples // len(templates["y"])):
                x, _t = transform(templates["x"][label], templates["t"], args)
                xs.append(x)
                ys.append(templates["y"][label])
        order = np.random.permutation(len(ys))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return np.stack(xs)[order].astype(np.float64), np.stack(ys)[order].astype(np.int32)


def check_reproduces_the_standard_set(dataset: Dataset) -> None:
    """The loop with the standard seed, normalised and standardised, is lmc's MNIST-1D."""
    x, y = _raw(STANDARD_SEED, 5000)
    x = (x - x.mean()) / x.std()
    train, test = x[:4000, :, None], x[4000:, :, None]
    mean, std = train.mean(), train.std()
    np.testing.assert_array_equal(y[:4000], np.asarray(dataset.y_train))
    np.testing.assert_array_equal(y[4000:], np.asarray(dataset.y_test))
    np.testing.assert_allclose((test - mean) / std, np.asarray(dataset.x_test), atol=1e-5)


def large_test_dataset(size: int = LARGE_TEST_SIZE, seed: int = LARGE_TEST_SEED,
                       data_dir: Path | None = None) -> Dataset:
    """lmc's MNIST-1D with a test split of `size` fresh examples (cached as .npz)."""
    import jax.numpy as jnp

    base = load_dataset("mnist1d", data_dir)
    path = (data_dir or default_data_dir()) / f"mnist1d_test_{size}_seed{seed}.npz"
    # the generator's normalisation of the standard set, then lmc's standardisation with
    # the training split's statistics
    standard, _ = _raw(STANDARD_SEED, 5000)
    mean, std = float(standard.mean()), float(standard.std())
    train = (standard[:4000] - mean) / std
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    else:
        raw, y = _raw(seed, size)
        x = ((raw - mean) / std)[..., None].astype(np.float32)
        atomic_write(path, lambda f: np.savez(f, x=x, y=y))
    x = (x - train.mean()) / train.std()
    return Dataset(name=base.name, x_train=base.x_train, y_train=base.y_train,
                   x_test=jnp.asarray(x, jnp.float32), y_test=jnp.asarray(y, jnp.int32),
                   num_classes=base.num_classes, augmentation=base.augmentation)


if __name__ == "__main__":
    check_reproduces_the_standard_set(load_dataset("mnist1d"))
    large = large_test_dataset()
    counts = np.bincount(np.asarray(large.y_test), minlength=10)
    print(f"standard set reproduced; large test split {large.x_test.shape}, "
          f"per class {counts.tolist()}")
