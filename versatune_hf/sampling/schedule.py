"""Weight schedules and the seeded per-draw domain choice shared by the map-style sampler and the stream."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..mixing.initial_weights import validate_weights
from ..mixing.weights import uniform_weights

UNIFORM_BLOCK = 8192


class WeightSchedule:
    """Domain weights as `(start position, weights)` entries: an entry's weights choose the domain of every draw
    from its position until the next entry's. Positions only grow, and an entry may never start at a draw that was
    already made, so every process and every replay applies it at the same draw."""

    def __init__(self, domains: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        self.domains = list(domains)
        start = validate_weights(weights, self.domains, "weights") if weights else uniform_weights(self.domains)
        self.entries: list[tuple[int, list[float]]] = [(0, [start[name] for name in self.domains])]

    def set(self, weights: Mapping[str, float], position: int, drawn_until: int) -> None:
        """Schedule `weights` from `position` on, given that draws before `drawn_until` were already made.

        Raises:
            RuntimeError: if `position < drawn_until`; applying the weights later would make this process's stream
                differ from the other ranks' and from a resumed run.
        """
        vector = [validate_weights(weights, self.domains, "weights")[name] for name in self.domains]
        if position < drawn_until:
            raise RuntimeError(
                f"New weights were scheduled for draw {position}, but this process has already drawn up to "
                f"{drawn_until}: schedule them at draw {drawn_until} or later (VersaTuneCallback picks such a "
                "position itself)."
            )
        last_position = self.entries[-1][0]
        if position < last_position:
            raise ValueError(f"Weights must be scheduled in order: {position} comes before {last_position}.")
        if position == last_position:
            self.entries[-1] = (position, vector)
        else:
            self.entries.append((position, vector))

    def index_at(self, position: int) -> int:
        """Index of the entry in force at `position`."""
        return bisect.bisect_right(self.entries, position, key=lambda entry: entry[0]) - 1

    def weights_at(self, position: int) -> dict[str, float]:
        """The weights that choose the domain of the draw at `position`."""
        return dict(zip(self.domains, self.entries[self.index_at(position)][1]))

    def segments(self, start: int, stop: int) -> list[tuple[int, int, list[float]]]:
        """The entries in force over positions `start <= p < stop`, as `(from, to, weight vector)` pieces."""
        first = self.index_at(start)
        pieces = []
        for index in range(first, len(self.entries)):
            begin = max(self.entries[index][0], start)
            if begin >= stop:
                break
            end = self.entries[index + 1][0] if index + 1 < len(self.entries) else stop
            pieces.append((begin, min(end, stop), self.entries[index][1]))
        return pieces

    def needed(self, ranges: Sequence[tuple[int, int | None]]) -> list[tuple[int, list[float]]]:
        """The entries in force somewhere in `ranges` (`(start, stop)`, `stop=None` for no end): the part of the
        schedule that drawing those positions can need."""
        kept: set[int] = set()
        for start, stop in ranges:
            if stop is not None and stop <= start:
                continue
            last = len(self.entries) - 1 if stop is None else self.index_at(stop - 1)
            kept.update(range(max(self.index_at(start), 0), last + 1))
        return [self.entries[index] for index in sorted(kept)]

    @property
    def current(self) -> dict[str, float]:
        """The most recently scheduled weights (they may start at a later position)."""
        return dict(zip(self.domains, self.entries[-1][1]))

    def as_list(self) -> list[tuple[int, dict[str, float]]]:
        """All entries as `(start position, {domain: weight})`."""
        return [(position, dict(zip(self.domains, vector))) for position, vector in self.entries]

    def state_dict(self) -> list[list[Any]]:
        return [[position, list(vector)] for position, vector in self.entries]

    def load_state_dict(self, entries: Sequence[Sequence[Any]]) -> None:
        self.entries = [(int(position), [float(w) for w in vector]) for position, vector in entries]


class ScheduledDraws:
    """What the callback uses of a weighted source (the map-style sampler and the stream): the weight schedule and
    the position of the furthest draw made. Subclasses set `_schedule` and advance `_drawn_until` as they draw."""

    _schedule: WeightSchedule
    _drawn_until: int

    @property
    def position(self) -> int:
        """Position just after the furthest draw made so far."""
        return self._drawn_until

    @property
    def current_weights(self) -> dict[str, float]:
        """The most recently scheduled weights (they may start at a later position)."""
        return self._schedule.current

    @property
    def schedule(self) -> list[tuple[int, dict[str, float]]]:
        """The `(start position, weights)` entries this source holds, in order. A sampler restored from a checkpoint
        starts with the entries the checkpoint kept (those a resume can need); `versatune_history.jsonl` is the run's
        whole record."""
        return self._schedule.as_list()

    def weights_at(self, position: int) -> dict[str, float]:
        """The weights that choose the domain of the draw at `position`."""
        return self._schedule.weights_at(position)

    def drawn_counts(self, position: int) -> list[int]:
        """How many draws of each domain (in `domains` order) were made before `position`."""
        raise NotImplementedError

    def realised_counts(self, start: int, end: int) -> dict[str, int]:
        """How many draws of each domain were made at positions `start <= p < end` (all drawn already)."""
        before, until = self.drawn_counts(start), self.drawn_counts(end)
        return {name: after - earlier for name, earlier, after in zip(self._schedule.domains, before, until)}

    def set_weights(self, weights: Mapping[str, float], position: int) -> None:
        """Schedule `weights` to choose domains from draw `position` on.

        Raises:
            RuntimeError: if the draw at `position` was already made; applying the weights later would make this
                process's stream differ from the other ranks' and from a resumed run.
        """
        self._schedule.set(weights, position, self._drawn_until)


def choose_codes(schedule: WeightSchedule, start: int, uniforms: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The domain codes of the draws at positions `start, start + 1, ...`, one per uniform number: the vectorised
    form of `DomainChooser.choose` (the same codes for the same uniforms and schedule)."""
    codes = np.empty(len(uniforms), dtype=dtype)
    for begin, end, vector in schedule.segments(start, start + len(uniforms)):
        cumulative = np.array(_cumulative(vector))
        piece = slice(begin - start, end - start)
        codes[piece] = np.searchsorted(cumulative, uniforms[piece], side="right")
    return codes


class DomainChooser:
    """Chooses the domain of consecutive draws from `first_position` on: the uniform number of each draw comes from a
    stream seeded by `seed_key`, the weights from the schedule entry in force at that draw (read lazily, so entries
    added while drawing apply at their position)."""

    def __init__(self, schedule: WeightSchedule, seed_key: Sequence[int], first_position: int) -> None:
        self._schedule = schedule
        self._uniforms = np.random.default_rng(list(seed_key))
        self._block: list[float] = []
        self._offset = 0
        self._entry = schedule.index_at(first_position)
        self._cumulative = _cumulative(schedule.entries[self._entry][1])

    def choose(self, position: int) -> int:
        """The domain index of the draw at `position` (call with consecutive positions)."""
        entries = self._schedule.entries
        while self._entry + 1 < len(entries) and entries[self._entry + 1][0] <= position:
            self._entry += 1
            self._cumulative = _cumulative(entries[self._entry][1])
        if self._offset == len(self._block):
            self._block = self._uniforms.random(UNIFORM_BLOCK).tolist()
            self._offset = 0
        uniform = self._block[self._offset]
        self._offset += 1
        return bisect.bisect_right(self._cumulative, uniform)


def _cumulative(vector: list[float]) -> list[float]:
    """Cumulative weights for `bisect`; the last positive domain's bound is exactly 1 so every uniform maps inside."""
    total = sum(vector)
    cumulative = [value / total for value in itertools.accumulate(vector)]
    last_positive = max(index for index, value in enumerate(vector) if value > 0)
    for index in range(last_positive, len(cumulative)):
        cumulative[index] = 1.0
    return cumulative
