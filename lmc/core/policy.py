"""The one execution policy: how each computation is laid out on the device.

Every choice between vmapping, scanning and looping in lmc is read from an
`ExecutionPolicy`, chosen per (model kind, backend) by `ExecutionPolicy.for_model`, and
every caller may pass its own. The measured reasons (benchmarks/):

- XLA's CPU backend runs convolutions several times slower vmapped over weights or inside
  `lax.scan`/`fori_loop` than as a loop of jitted calls (Conv-4 vmapped over 2 siblings:
  0.31x the throughput; conv1d HVP on 2,000 examples: 124 ms scanned, 15 ms unrolled;
  conv1d Lanczos, 100 steps: 9.9 s in a `fori_loop`, 1.8 s driven from Python). Dense
  layers gain from vmap and many steps per dispatch.
- On accelerators everything is vmapped and scanned: small models leave the device idle
  otherwise.
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class ExecutionPolicy:
    """How to lay out the science axes of one model on one backend.

    vmap_siblings: train S > 1 siblings in one vmapped program (else a loop of programs).
    steps_per_dispatch: training steps per compiled call (`lax.scan` inside it when > 1).
    alpha_chunk: interpolation coefficients per vmapped evaluation; None = all of them in
        one program, 1 = one α at a time without vmap.
    unroll_batches: a mean over up to this many equal-size batches (HVPs, gradients) is a
        Python loop inside the compiled program; more batches use `lax.scan`.
    drive_lanczos: run Lanczos as one compiled step per iteration driven from Python
        instead of one compiled `fori_loop`.
    """

    vmap_siblings: bool = True
    steps_per_dispatch: int = 100
    alpha_chunk: int | None = None
    unroll_batches: int = 0
    drive_lanczos: bool = False

    @classmethod
    def for_model(cls, convolutional: bool = True, backend: str | None = None
                  ) -> ExecutionPolicy:
        """The measured policy for a model with or without convolutions on `backend`
        (default: JAX's default backend)."""
        backend = backend or jax.default_backend()
        if backend != "cpu":
            return cls()
        if convolutional:
            return cls(vmap_siblings=False, steps_per_dispatch=1, alpha_chunk=1,
                       unroll_batches=16, drive_lanczos=True)
        # Dense models on the CPU: vmapped siblings, α chunks of 5 and scanned training steps
        # pay (benchmarks/train_throughput.py, barrier_eval.py), and so does Lanczos in one
        # `fori_loop` (MLP 40-100-100-10, 2,000 examples, 100 steps: 0.53 s vs 0.87 s driven
        # from Python, measured in one process). Up to 16 batches are unrolled, as for convs.
        return cls(vmap_siblings=True, steps_per_dispatch=100, alpha_chunk=5,
                   unroll_batches=16, drive_lanczos=False)

    @property
    def vectorize_alphas(self) -> bool:
        return self.alpha_chunk != 1


def default_policy() -> ExecutionPolicy:
    """The policy where nothing is known about the model: the one safe for convolutions."""
    return ExecutionPolicy.for_model(convolutional=True)
