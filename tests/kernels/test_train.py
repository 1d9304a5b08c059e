"""kernels.train: the warm-up/decay multiplier against its formula written out, and the shared loop against
a hand-written loop (same losses, same parameters), plus bad input."""

import math

import numpy as np
import pytest
import torch

from kernels.train import fit, warmup_decay


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_schedule_warms_up_linearly_then_decays_to_the_floor(decay):
    lam = warmup_decay(100, 10, decay, floor=0.1)
    assert lam(0) == pytest.approx(0.1 * (0.1 + 0.9 * (1.0 if decay == "cosine" else 1.0)))
    assert lam(9) == pytest.approx(0.1 + 0.9 * (0.5 * (1 + math.cos(math.pi * 9 / 100)) if decay == "cosine" else 0.91))
    values = [lam(s) for s in range(10, 101)]
    assert all(b <= a + 1e-15 for a, b in zip(values, values[1:])), "not monotone after the warm-up"
    assert lam(100) == pytest.approx(0.1) and lam(1000) == pytest.approx(0.1 if decay == "cosine" else 0.1)


def test_the_two_recipes_of_the_chapters():
    """Over-Tokenized: 20-step warm-up, cosine to 10 %; RELAY: warm-up, linear to zero (bitwise its old form)."""
    ot = warmup_decay(250, 20, "cosine", floor=0.1)
    for s in (0, 19, 20, 125, 249):
        assert ot(s) == pytest.approx(min(1.0, (s + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 250))))
    relay = warmup_decay(2000, 20, "linear")
    for s in (0, 5, 19, 20, 1000, 1999):
        assert relay(s) == min(1.0, (s + 1) / 20) * max(0.0, 1 - s / 2000)


def test_fit_equals_a_hand_written_loop():
    def run(use_fit):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        xs, ys = torch.randn(30, 8, 4, generator=g), torch.randn(30, 8, 1, generator=g)
        loss_at = lambda s: torch.nn.functional.mse_loss(model(xs[s - 1]), ys[s - 1])  # noqa: E731
        lam = warmup_decay(30, 5, "cosine", floor=0.1)
        if use_fit:
            seen = []
            losses = fit(30, loss_at, [opt], lam, on_step=lambda s, l: seen.append(s))
            assert seen == list(range(1, 31))
        else:
            sched, losses = torch.optim.lr_scheduler.LambdaLR(opt, lam), []
            for s in range(1, 31):
                loss = loss_at(s)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
        return np.asarray(losses), model.weight.detach().clone()

    (a, wa), (b, wb) = run(True), run(False)
    assert np.array_equal(a, b) and torch.equal(wa, wb)


@pytest.mark.parametrize("call, match", [
    (lambda: warmup_decay(0, 1), "steps"), (lambda: warmup_decay(10, 0), "warmup"),
    (lambda: warmup_decay(10, 1, "step"), "decay"), (lambda: warmup_decay(10, 1, floor=1.5), "floor"),
    (lambda: fit(5, lambda s: torch.tensor(0.0), []), "optimizers"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
