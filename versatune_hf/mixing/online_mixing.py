"""Online Data Mixing (ODM; Albalak et al. 2023, arXiv 2312.02406): an Exp3 bandit over domains whose reward is the
training loss of the rows drawn from each domain. Pure Python, like `strategies`.

One bandit round (Algorithm 1 of the paper, with the mixed mini-batches of the released code: every domain seen in
the round's batches gets its reward):

* reward estimate   R̂_d ← α · R̂_d + (1 − α) · L_d / π_d          for each domain d trained on in the round
* exploration rate  ε_t = min(1/K, √(ln K / (K · t))),  ε_0 = 1/K
* new weights       π_d = (1 − K · ε_t) · exp(ε_{t−1} · R̂_d) / Σ_j exp(ε_{t−1} · R̂_j) + ε_t

where L_d is the mean token loss of domain d's rows in the round, π the weights those rows were drawn with, α the
smoothing and K the number of domains. A domain with a high loss, or one drawn rarely (small π_d), gains weight;
ε_t keeps every domain explored and shrinks as rounds accumulate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .weights import Weights, multiplicative_update

DEFAULT_ODM_SMOOTHING = 0.9
"""α of the reward estimate's moving average (the released code's default smoothing factor)."""


def exploration_rate(num_domains: int, round_index: int) -> float:
    """ε_t = min(1/K, √(ln K / (K · t))) for round t ≥ 1; ε_0 = 1/K."""
    if round_index <= 0:
        return 1.0 / num_domains
    return min(1.0 / num_domains, math.sqrt(math.log(num_domains) / (num_domains * round_index)))


@dataclass
class BanditState:
    """The bandit's memory: the reward estimate R̂ of every domain and the number of rounds played."""

    estimates: dict[str, float]
    rounds: int = 0

    @classmethod
    def start(cls, domains: list[str]) -> BanditState:
        """R̂ = 0 for every domain, no rounds yet."""
        return cls(dict.fromkeys(domains, 0.0))

    def state_dict(self) -> dict:
        return {"estimates": dict(self.estimates), "rounds": self.rounds}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> BanditState:
        return cls({name: float(value) for name, value in state["estimates"].items()}, int(state["rounds"]))


@dataclass
class BanditRound:
    """Result of one round: the new weights, the bandit state after the round, ε_t, and the rewards played."""

    weights: Weights
    state: BanditState
    exploration: float
    rewards: dict[str, float]


def odm_update(
    weights: Mapping[str, float], rewards: Mapping[str, float], state: BanditState, smoothing: float
) -> BanditRound:
    """Play one round: `rewards` are the mean training losses of the domains trained on (others are absent),
    `weights` the probabilities their rows were drawn with."""
    unknown = sorted(set(rewards) - set(state.estimates))
    if unknown:
        raise ValueError(f"Rewards for domains {unknown} that the bandit does not know ({sorted(state.estimates)}).")
    estimates = dict(state.estimates)
    for name, reward in rewards.items():
        if weights[name] <= 0:
            raise ValueError(f"Domain {name!r} was trained on but its sampling weight is {weights[name]}.")
        estimates[name] = smoothing * estimates[name] + (1.0 - smoothing) * reward / weights[name]
    num_domains = len(estimates)
    rounds = state.rounds + 1
    previous_rate, rate = exploration_rate(num_domains, rounds - 1), exploration_rate(num_domains, rounds)
    exploit = multiplicative_update(dict.fromkeys(estimates, 1.0), estimates, previous_rate)
    new_weights = {name: (1.0 - num_domains * rate) * exploit[name] + rate for name in estimates}
    return BanditRound(new_weights, BanditState(estimates, rounds), rate, dict(rewards))
