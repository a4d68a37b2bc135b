import itertools
import math

import numpy as np
import pytest
import torch

from napari_nmsg.engine import NMSGConfig, Progress, run_events
from napari_nmsg.engine.symmetry import apply_symmetry
from napari_nmsg.engine.train import (
    DivergenceGuard,
    augment_inplane,
    iter_train,
    lr_factor,
    validation_steps,
)


def test_guard_flags_losses_far_above_the_recent_median_and_nan():
    guard = DivergenceGuard(factor=2.0, window=5)  # the default factor is 10
    assert not guard.diverged(100.0)  # the window is not full yet: never a divergence
    for loss in (1.0, 1.1, 0.9, 1.0):
        assert not guard.diverged(loss)
    assert not guard.diverged(1.9)
    assert guard.diverged(2.5)
    assert guard.diverged(math.nan)
    assert not guard.diverged(1.05)  # flagged losses did not enter the median


def test_a_wild_batch_is_skipped_and_training_goes_on_from_the_weight_average():
    config = NMSGConfig(unet_width=4, crop=16, train_steps=60, seed=0)
    calls = {"n": 0}

    def pairs(rng, generator):
        calls["n"] += 1
        x = torch.randn(2, 1, 16, 16, 16, generator=generator)
        target = 0.5 * x + torch.randn(x.shape, generator=generator)
        return (x * 1000 if calls["n"] == 40 else x), target, x

    metrics = []

    def on_event(event):
        if isinstance(event, Progress):
            metrics.append(event.metrics)

    net = run_events(iter_train(pairs, config, torch.device("cpu")), on_event)
    assert [m.get("rollbacks", 0) for m in metrics] == [0] * 39 + [1] * 21
    assert metrics[-1]["loss"] < 1.5 * np.median([m["loss"] for m in metrics[20:39]])
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_the_learning_rate_rises_over_the_warm_up_then_decays_to_five_percent():
    assert lr_factor(0, 3000, 0.0) == 1.0
    assert lr_factor(1500, 3000, 0.0) == pytest.approx(0.525)
    assert lr_factor(3000, 3000, 0.0) == pytest.approx(0.05)
    rising = [lr_factor(s, 3000, 0.05) for s in range(151)]
    assert rising[0] == pytest.approx(1 / 151)
    assert all(a < b for a, b in itertools.pairwise(rising))
    assert rising[150] == pytest.approx(lr_factor(150, 3000, 0.0))  # back on the cosine
    assert lr_factor(2000, 3000, 0.05) == lr_factor(2000, 3000, 0.0)


def test_training_follows_the_configured_warm_up():
    def pairs(rng, generator):
        x = torch.randn(2, 1, 16, 16, 16, generator=generator)
        return x, 0.5 * x, x

    def trained(warmup):
        config = NMSGConfig(unet_width=4, crop=16, train_steps=20, seed=0, lr_warmup=warmup)
        return run_events(iter_train(pairs, config, torch.device("cpu"))).state_dict()

    plain, same, warmed = trained(0.0), trained(0.0), trained(0.25)
    assert all(torch.equal(v, same[k]) for k, v in plain.items())
    assert not all(torch.equal(v, warmed[k]) for k, v in plain.items())


def test_scores_start_late_in_the_schedule_and_always_include_the_last_step():
    assert validation_steps(2400) == set(range(1600, 2401, 100))
    assert validation_steps(3000) == set(range(2000, 3001, 100))
    assert validation_steps(300) == {200, 300}
    assert validation_steps(30) == {30}


def test_the_best_scored_weight_average_is_returned():
    config = NMSGConfig(unet_width=4, crop=16, train_steps=300, seed=0)

    def pairs(rng, generator):
        x = torch.randn(2, 1, 16, 16, 16, generator=generator)
        return x, 0.5 * x, x

    scores, states = {200: 1.0, 300: 2.0}, []  # the earlier average scores better

    def validate(net):
        states.append({k: v.clone() for k, v in net.state_dict().items()})
        return scores[len(states) * 100 + 100]

    net = run_events(iter_train(pairs, config, torch.device("cpu"), validate=validate))
    assert len(states) == 2
    assert all(torch.equal(v, states[0][k]) for k, v in net.state_dict().items())
    assert not all(torch.equal(v, states[1][k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("turns", [True, False])
def test_augmentation_turns_pairs_only_where_allowed_and_alike(turns):
    """Flips keep the tilt axis where it is; quarter turns (``turns``) swap it with the axis
    across it. Either way input and target move together."""
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 1, 4, 4).repeat(64, 1, 1, 1, 1)
    flips = [apply_symmetry(x[0], f, 0) for f in ((), (-1,), (-2,), (-2, -1))]
    inputs, targets = augment_inplane([x, 2 * x], np.random.default_rng(0), turns)
    assert torch.equal(targets, 2 * inputs)
    flipped_only = [any(torch.equal(sample, f) for f in flips) for sample in inputs]
    assert all(flipped_only) != turns  # 64 draws: turned at least once where allowed
