"""The vectorised sampler against a plain one-draw-at-a-time statement of its semantics; seeking; resume states that
stay small however many updates a run makes."""

import bisect
import itertools
import json

import numpy as np
import pytest

from versatune_hf.mixing import BanditState, UpdateParams, apply_guards, odm_update
from versatune_hf.sampling import WeightedDomainSampler
from versatune_hf.sampling.sampler import BLOCK_DRAWS


def reference_draws(labels, schedule, seed, epochs):
    """The sampler's stream, one draw at a time, straight from its definition: the domain of draw `i` of epoch `e`
    is the `i`-th uniform of the stream seeded `(seed, 0, e)` against the cumulative weights in force at its global
    position; the row is the next one of that domain's permutation, seeded `(seed, 1, domain, cycle)`."""
    domains = sorted(set(labels))
    rows = [np.array([i for i, label in enumerate(labels) if label == name]) for name in domains]
    consumed = [0] * len(domains)
    stream = []
    positions = [position for position, _ in schedule]
    for epoch in range(epochs):
        uniforms = np.random.default_rng([seed, 0, epoch]).random(len(labels))
        for offset in range(len(labels)):
            weights = schedule[bisect.bisect_right(positions, epoch * len(labels) + offset) - 1][1]
            vector = [weights[name] for name in domains]
            total = sum(vector)
            cumulative = [value / total for value in itertools.accumulate(vector)]
            last_positive = max(index for index, value in enumerate(vector) if value > 0)
            cumulative[last_positive:] = [1.0] * (len(cumulative) - last_positive)
            domain = bisect.bisect_right(cumulative, uniforms[offset])
            cycle, index = divmod(consumed[domain], len(rows[domain]))
            stream.append(int(np.random.default_rng([seed, 1, domain, cycle]).permutation(rows[domain])[index]))
            consumed[domain] += 1
    return stream


def random_weights(rng, domains, zero=False):
    weights = rng.dirichlet(np.ones(len(domains)))
    if zero:
        weights[rng.integers(len(domains))] = 0.0
    return dict(zip(domains, (weights / weights.sum()).tolist()))


@pytest.mark.parametrize("trial", range(6))
def test_stream_equals_the_one_draw_at_a_time_definition(trial):
    """Weights scheduled while drawing, also inside a computed block (right at the next draw), across epochs and
    with domains whose permutation is exhausted many times inside one block."""
    rng = np.random.default_rng(trial)
    size = int(rng.integers(50, 3 * BLOCK_DRAWS))
    labels = rng.choice(["code", "law", "medicine", "tiny"], size, p=[0.5, 0.3, 0.199, 0.001]).tolist()
    labels[0] = "tiny"
    domains = sorted(set(labels))
    sampler = WeightedDomainSampler(labels, random_weights(rng, domains), seed=trial)
    schedule = [(0, sampler.weights_at(0))]
    changes = sorted(set(rng.integers(1, 3 * size, 8).tolist()))
    drawn = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for row in sampler:
            drawn.append(row)
            if changes and len(drawn) == changes[0]:
                changes.pop(0)
                position = len(drawn) + int(rng.choice([0, 1, BLOCK_DRAWS // 2]))
                position = max(position, schedule[-1][0])
                weights = random_weights(rng, domains, zero=bool(rng.integers(2)))
                sampler.set_weights(weights, position)
                schedule = [entry for entry in schedule if entry[0] != position] + [(position, weights)]
    assert len(schedule) > 3
    assert drawn == reference_draws(labels, schedule, trial, 3)


def test_seeking_to_a_later_epoch_counts_without_drawing():
    labels = ["a"] * 300 + ["b"] * 50 + ["c"] * 7
    walked = WeightedDomainSampler(labels, {"a": 0.2, "b": 0.3, "c": 0.5}, seed=4)
    for epoch in range(5):
        walked.set_epoch(epoch)
        list(walked)
    sought = WeightedDomainSampler(labels, {"a": 0.2, "b": 0.3, "c": 0.5}, seed=4)
    sought.set_epoch(5)
    assert sought.position == 0, "no draw was made"
    assert sought.state_dict()["epoch_start_consumed"] == walked.state_dict()["epoch_start_consumed"]
    assert list(sought) == list(walked)


def skip_then_rest(sampler, skipped):
    """What a resumed Trainer trains on: the epoch's draws after the first `skipped`, plus the head it may pad with."""
    draws = list(sampler)
    return draws[:skipped], draws[skipped:]


def test_resume_state_leaves_out_the_skipped_draws_and_replays_the_rest_exactly():
    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    full = WeightedDomainSampler(labels, seed=1)
    full.replayed_head = 16
    full.set_epoch(1)
    iterator = iter(full)
    head = [next(iterator) for _ in range(16)]
    for step in range(1, 40):  # one update every 8 draws, each starting 16 draws ahead
        for _ in range(8):
            head.append(next(iterator))
        full.set_weights({"a": 0.1 + 0.01 * step, "b": 0.3, "c": 0.6 - 0.01 * step}, 1000 + 16 + 8 * step + 16)
    trained = 1000 + 16 + 8 * 39  # the checkpoint's step starts here
    state = json.loads(json.dumps(full.state_dict(epoch=1, position=trained)))
    rest = list(iterator)
    assert state["resume"]["skipped"] == [1016, trained]
    assert len(state["schedule"]) <= 5, "only the entries in force over the head and from the checkpoint on"

    restored = WeightedDomainSampler(labels, seed=1)
    restored.load_state_dict(state)
    skipped, resumed = skip_then_rest(restored, trained - 1000)
    assert resumed == (head + rest)[trained - 1000 :]
    assert skipped[:16] == head[:16], "the head accelerate pads an epoch's last batches with is real"
    assert skipped[16:] == [len(labels)] * (trained - 1016), "skipped draws are an index no dataset has"
    with pytest.raises(ValueError, match="skips draws"):
        restored.drawn_counts(trained - 1)
    assert restored.drawn_counts(len(labels) * 2) == full.drawn_counts(len(labels) * 2)


def test_checkpoint_state_stays_bounded_over_100k_odm_rounds():
    """odm plays a round every step; the saved sampler state must not grow with the number of rounds."""
    rng = np.random.default_rng(0)
    domains = ["code", "finance", "law", "medicine", "other", "science"]
    labels = np.repeat(domains, [400_000, 50_000, 20_000, 30_000, 300_000, 200_000]).tolist()
    sampler = WeightedDomainSampler(labels, seed=0)
    sampler.replayed_head = 8
    params = UpdateParams(min_weight=0.01)
    bandit, weights = BanditState.start(domains), sampler.current_weights
    iterator = iter(sampler)
    sizes = []
    for round_ in range(1, 100_001):
        for _ in range(8):
            next(iterator)
        rewards = dict(zip(domains, rng.random(6).tolist()))
        result = odm_update(weights, rewards, bandit, 0.9)
        bandit, weights = result.state, apply_guards(weights, result.weights, params)
        sampler.set_weights(weights, 8 * round_ + 16)
        if round_ % 25_000 == 0:
            sizes.append(len(json.dumps(sampler.state_dict(epoch=0, position=8 * round_))))
    assert len(sampler.schedule) == 100_001
    assert max(sizes) < 2_000, sizes
    assert max(sizes) - min(sizes) < 100, f"no growth with the number of rounds: {sizes}"
