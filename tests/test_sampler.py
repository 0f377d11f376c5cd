"""WeightedDomainSampler: shares, determinism, per-domain order, scheduled switches and exact replay from state."""

import itertools
import json

import pytest

from versatune_hf import WeightedDomainSampler

LABELS = ["law"] * 600 + ["code"] * 300 + ["medicine"] * 100


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def domains_of(rows):
    return [LABELS[row] for row in rows]


def test_empirical_shares_follow_weights_over_200k_draws():
    """Over 200,000 draws every domain's share is within 0.005 of its weight (about 5 binomial sigmas)."""
    weights = {"law": 0.1, "code": 0.3, "medicine": 0.6}
    sampler = WeightedDomainSampler(LABELS, weights, seed=3)
    counts = {name: 0 for name in weights}
    for _ in range(200):
        for row in sampler:
            counts[LABELS[row]] += 1
    total = sum(counts.values())
    assert total == 200_000
    for name, weight in weights.items():
        assert counts[name] / total == pytest.approx(weight, abs=0.005)


def test_epoch_length_equals_dataset_length():
    """Each pass yields exactly len(dataset) indices, so the Trainer's steps per epoch are unchanged."""
    sampler = WeightedDomainSampler(LABELS, seed=0)
    assert len(sampler) == len(LABELS)
    assert len(list(sampler)) == len(LABELS)
    assert len(list(sampler)) == len(LABELS)


def test_same_seed_same_stream_other_seed_other_stream():
    """The stream is a function of the seed only."""
    first = list(WeightedDomainSampler(LABELS, {"law": 0.2, "code": 0.3, "medicine": 0.5}, seed=7))
    second = list(WeightedDomainSampler(LABELS, {"law": 0.2, "code": 0.3, "medicine": 0.5}, seed=7))
    other = list(WeightedDomainSampler(LABELS, {"law": 0.2, "code": 0.3, "medicine": 0.5}, seed=8))
    assert first == second
    assert first != other


def test_each_domain_cycles_through_its_rows_without_repetition():
    """A domain's rows come in a shuffled order with no repeat until all of them were drawn, then a new order."""
    sampler = WeightedDomainSampler(LABELS, {"law": 0.0, "code": 0.0, "medicine": 1.0}, seed=1)
    rows = take(sampler, 250)
    medicine_rows = set(range(900, 1000))
    assert set(rows[:100]) == medicine_rows
    assert set(rows[100:200]) == medicine_rows
    assert rows[:100] != rows[100:200]
    assert rows[:100] != sorted(rows[:100])


def test_zero_weight_domain_is_never_drawn():
    sampler = WeightedDomainSampler(LABELS, {"law": 0.5, "code": 0.0, "medicine": 0.5}, seed=2)
    assert "code" not in set(domains_of(list(sampler)))


def test_switch_happens_exactly_at_the_scheduled_position():
    """Weights scheduled for position P choose the domain of draw P and every later draw, and none before it."""
    sampler = WeightedDomainSampler(LABELS, {"law": 0.0, "code": 0.5, "medicine": 0.5}, seed=4)
    switch = 537
    sampler.set_weights({"law": 1.0, "code": 0.0, "medicine": 0.0}, switch)
    rows = list(sampler)
    domains = domains_of(rows)
    assert "law" not in domains[:switch]
    assert set(domains[switch:]) == {"law"}
    assert sampler.weights_at(switch - 1)["law"] == 0.0
    assert sampler.weights_at(switch)["law"] == 1.0
    assert sampler.drawn_domains(0, len(rows)) == domains


def test_weights_changed_mid_iteration_apply_lazily_at_their_position():
    """Weights scheduled while an epoch is being drawn take effect in that same epoch, at their position."""
    sampler = WeightedDomainSampler(LABELS, {"law": 0.0, "code": 1.0, "medicine": 0.0}, seed=5)
    iterator = iter(sampler)
    head = [next(iterator) for _ in range(100)]
    sampler.set_weights({"law": 0.0, "code": 0.0, "medicine": 1.0}, 150)
    tail = list(iterator)
    domains = domains_of(head + tail)
    assert set(domains[:150]) == {"code"}
    assert set(domains[150:]) == {"medicine"}


def test_scheduling_a_position_already_drawn_is_refused():
    """A switch behind the loader's read position would make this process's stream diverge, so it raises and names
    the first position that is still possible."""
    sampler = WeightedDomainSampler(LABELS, seed=0)
    iterator = iter(sampler)
    for _ in range(50):
        next(iterator)
    assert sampler.position == 50
    with pytest.raises(RuntimeError, match="at draw 50 or later"):
        sampler.set_weights({"law": 1.0, "code": 0.0, "medicine": 0.0}, 49)
    sampler.set_weights({"law": 1.0, "code": 0.0, "medicine": 0.0}, 50)


def test_state_round_trip_replays_the_epoch_exactly():
    """A sampler restored from a mid-epoch state_dict (through JSON) replays the same stream, switches included.

    This is the resume flow: the checkpoint holds the schedule so far; the replay re-draws the epoch from its start;
    an update made after the checkpoint is scheduled again at the same position when training reaches it.
    """
    weights = {"law": 0.3, "code": 0.3, "medicine": 0.4}
    original = WeightedDomainSampler(LABELS, weights, seed=11)
    epoch_0 = list(original)
    original.set_weights({"law": 0.8, "code": 0.1, "medicine": 0.1}, 1200)
    iterator = iter(original)
    head = [next(iterator) for _ in range(300)]
    state = json.loads(json.dumps(original.state_dict()))
    original.set_weights({"law": 0.1, "code": 0.1, "medicine": 0.8}, 1500)
    epoch_1 = head + list(iterator)
    epoch_2 = list(original)

    restored = WeightedDomainSampler(LABELS, weights, seed=0)
    restored.load_state_dict(state)
    assert restored.seed == 11 and restored.epoch == 1
    iterator = iter(restored)
    replay_head = [next(iterator) for _ in range(300)]
    restored.set_weights({"law": 0.1, "code": 0.1, "medicine": 0.8}, 1500)
    assert replay_head + list(iterator) == epoch_1
    assert list(restored) == epoch_2
    assert restored.schedule == original.schedule
    assert epoch_0 != epoch_1


def test_set_epoch_jumps_ahead_to_the_same_stream():
    """Asking for epoch 2 directly gives the stream a sampler reaches after drawing epochs 0 and 1."""
    weights = {"law": 0.2, "code": 0.2, "medicine": 0.6}
    walked = WeightedDomainSampler(LABELS, weights, seed=9)
    walked.set_weights({"law": 0.6, "code": 0.2, "medicine": 0.2}, 700)
    list(walked)
    list(walked)
    epoch_2 = list(walked)
    jumped = WeightedDomainSampler(LABELS, weights, seed=9)
    jumped.set_weights({"law": 0.6, "code": 0.2, "medicine": 0.2}, 700)
    jumped.set_epoch(2)
    assert list(jumped) == epoch_2
    jumped.set_epoch(2)
    assert list(jumped) == epoch_2


def test_realised_counts_cover_a_window_of_positions():
    sampler = WeightedDomainSampler(LABELS, {"law": 0.0, "code": 1.0, "medicine": 0.0}, seed=0)
    sampler.set_weights({"law": 1.0, "code": 0.0, "medicine": 0.0}, 1100)
    list(sampler)
    list(sampler)
    assert sampler.realised_counts(0, 1000) == {"code": 1000, "law": 0, "medicine": 0}
    assert sampler.realised_counts(900, 1200) == {"code": 200, "law": 100, "medicine": 0}


def test_state_is_small_and_json_serialisable():
    """The state holds integers and the schedule, not the row order (no copy of the dataset)."""
    sampler = WeightedDomainSampler(LABELS, seed=0)
    list(sampler)
    state = sampler.state_dict()
    assert set(state) == {
        *("version", "seed", "domains", "domain_sizes", "epoch", "epoch_start_consumed", "resume", "schedule")
    }
    assert len(json.dumps(state)) < 500


def test_restoring_a_state_for_other_data_is_refused():
    state = WeightedDomainSampler(LABELS, seed=0).state_dict()
    other = WeightedDomainSampler(LABELS[:-1], seed=0)
    with pytest.raises(ValueError, match="same train dataset"):
        other.load_state_dict(state)


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        ([], {}, "empty"),
        (["law", "code"], {"domains": ["law"]}, "not in domains"),
        (["law", "code"], {"domains": ["law", "code", "finance"]}, "no train rows"),
        (["law", "code"], {"weights": {"law": 1.0}}, "no weight for train domains"),
        (["law", "code"], {"weights": {"law": -1.0, "code": 2.0}}, "negative"),
        (["law", "code"], {"seed": -1}, "seed"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightedDomainSampler(labels, **kwargs)


def test_explicit_domain_order_is_kept():
    sampler = WeightedDomainSampler(["b", "a", "b"], {"b": 0.5, "a": 0.5}, domains=["b", "a"])
    assert sampler.domains == ["b", "a"]
    assert sampler.domain_sizes == {"b": 2, "a": 1}
    assert sorted(sampler) == [0, 1, 2]
