"""The training loop the language chapters share: a learning-rate warm-up followed by a cosine or linear decay,
and the loop that draws a batch, steps every optimizer and every schedule, and records the loss.

Not a paper's method but the recipe the papers' experiments use (Over-Tokenized Transformer, arXiv 2501.16975:
AdamW with warm-up and cosine decay; RELAY, arXiv 2502.08482: AdamW with a linear schedule). The multiplier of
the base learning rate at step s (0-based) of a run of S steps with W warm-up steps is

    lambda(s) = min(1, (s + 1) / W) * ( f + (1 - f) * d(s) ),
    d(s) = (1 + cos(pi * min(s, S) / S)) / 2      (cosine)     or     max(0, 1 - s / S)      (linear),

with f the floor the decay ends at (a fraction of the base rate).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from kernels._validate import check_int

DECAYS = ("cosine", "linear")


def warmup_decay(steps: int, warmup: int, decay: str = "cosine", floor: float = 0.0) -> Callable[[int], float]:
    """lambda(s) of the module docstring, for ``torch.optim.lr_scheduler.LambdaLR``."""
    check_int("steps", steps, 1)
    check_int("warmup", warmup, 1)
    if decay not in DECAYS:
        raise ValueError(f"decay: expected one of {DECAYS}, received {decay!r}")
    if not (isinstance(floor, (int, float)) and 0.0 <= floor <= 1.0):
        raise ValueError(f"floor: expected a number in [0, 1], received {floor!r}")

    def lam(s: int) -> float:
        if decay == "cosine":
            d = 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        else:
            d = max(0.0, 1 - s / steps)
        return min(1.0, (s + 1) / warmup) * (floor + (1 - floor) * d)

    return lam


def fit(steps: int, batch_loss: Callable[[int], Tensor], optimizers: Sequence[torch.optim.Optimizer],
        schedule: Callable[[int], float] | None = None, *, desc: str | None = None,
        on_step: Callable[[int, float], None] | None = None) -> np.ndarray:
    """Run ``steps`` steps: ``batch_loss(s)`` draws a batch and returns its loss (s = 1, 2, ...), then every
    optimizer steps and, with ``schedule`` (a multiplier as :func:`warmup_decay` returns), every learning rate
    follows it. ``on_step(s, loss)`` runs after each step (evaluations). Returns the training losses."""
    check_int("steps", steps, 1)
    optimizers = list(optimizers)
    if not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
        raise ValueError(f"optimizers: expected a non-empty sequence of torch optimizers, received {optimizers!r}")
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers] if schedule else []
    losses = np.empty(steps)
    iterator: Iterable[int] = range(1, steps + 1)
    if desc is not None:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=desc, mininterval=5)
    for s in iterator:
        loss = batch_loss(s)
        for o in optimizers:
            o.zero_grad()
        loss.backward()
        for o in optimizers:
            o.step()
        for sch in scheds:
            sch.step()
        losses[s - 1] = loss.item()
        if on_step is not None:
            on_step(s, losses[s - 1])
    return losses
