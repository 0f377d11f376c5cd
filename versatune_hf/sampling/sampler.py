"""`WeightedDomainSampler`: draws train rows by domain from weights that may change during an epoch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from .schedule import DomainChooser, ScheduledDraws, WeightSchedule

SAMPLER_STATE_VERSION = 1
_DOMAIN_STREAM, _ORDER_STREAM = 0, 1


class WeightedDomainSampler(ScheduledDraws, Sampler[int]):
    r"""
    Yields train-row indices: each draw picks a domain from the weights in force at that draw, then the next row of
    that domain.

    Every draw has a global *position*: draw `i` of epoch `e` is position `e * len(sampler) + i`. Weights are a
    schedule of `(position, weights)` entries: the weights of an entry apply from its position on, so a change made
    while the DataLoader prefetches still lands on the same draw in every process and in every replay. The domain of
    a draw comes from a uniform number of a stream seeded by `(seed, epoch)`; the row comes from a per-domain
    permutation seeded by `(seed, domain, cycle)` that is walked without repetition and reshuffled when exhausted
    (the walk continues across epochs). So the whole stream is a function of the seed, the schedule and the epoch,
    identical on every rank, and `state_dict()` is a few integers plus the schedule.

    Each epoch yields `len(domain_labels)` indices, so the Trainer's step count per epoch is unchanged.

    Args:
        domain_labels (`Sequence[str]`):
            The domain of every train row, in the DataLoader's row order.
        weights (`Mapping[str, float]`, *optional*):
            Starting weights, one per domain; uniform when omitted.
        seed (`int`, *optional*, defaults to `0`):
            Seed of both random streams. Use the same seed on every rank.
        domains (`Sequence[str]`, *optional*):
            Domain order used in the state and logs; defaults to the sorted distinct labels. Every listed domain
            must have at least one row.
    """

    def __init__(
        self,
        domain_labels: Sequence[str],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        domains: Sequence[str] | None = None,
    ) -> None:
        present = sorted({str(label) for label in domain_labels})
        if not present:
            raise ValueError("WeightedDomainSampler needs at least one row; the train dataset is empty.")
        self.domains: list[str] = list(domains) if domains is not None else present
        unknown = sorted(set(present) - set(self.domains))
        if unknown:
            raise ValueError(f"Rows are labelled with domains {unknown} that are not in domains={self.domains}.")
        code_of = {name: index for index, name in enumerate(self.domains)}
        codes = np.fromiter((code_of[str(label)] for label in domain_labels), dtype=np.int32, count=len(domain_labels))
        self._rows = [np.flatnonzero(codes == index) for index in range(len(self.domains))]
        empty = [name for name, rows in zip(self.domains, self._rows) if rows.size == 0]
        if empty:
            raise ValueError(
                f"Domains {empty} have no train rows. Remove them from the domain list or add data for them."
            )
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}.")
        self.seed = int(seed)
        self._num_rows = int(codes.size)
        self._schedule = WeightSchedule(self.domains, weights)
        self._reset_progress(epoch=0, consumed=[0] * len(self.domains))

    def _reset_progress(self, epoch: int, consumed: list[int]) -> None:
        self.epoch = epoch
        self._epoch_starts: dict[int, list[int]] = {epoch: list(consumed)}
        self._drawn_until = epoch * self._num_rows
        self._draw_log: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._num_rows

    @property
    def epoch_length(self) -> int:
        """Draws per epoch (= rows of the train dataset)."""
        return self._num_rows

    @property
    def domain_sizes(self) -> dict[str, int]:
        """Number of train rows of each domain."""
        return {name: int(rows.size) for name, rows in zip(self.domains, self._rows)}

    def epoch_start(self, epoch: int) -> int:
        """Global position of the first draw of `epoch`."""
        return epoch * self._num_rows

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw `epoch` (replaying the epochs in between if it is a later one)."""
        if epoch not in self._epoch_starts and epoch < min(self._epoch_starts):
            raise ValueError(
                f"Cannot go back to epoch {epoch}: this sampler's state starts at epoch {min(self._epoch_starts)}."
            )
        while max(self._epoch_starts) < epoch:
            for _ in self._draw_epoch(max(self._epoch_starts)):
                pass
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return self._draw_epoch(self.epoch)

    def _permutation(self, domain: int, cycle: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _ORDER_STREAM, domain, cycle])
        return rng.permutation(self._rows[domain])

    def _draw_epoch(self, epoch: int) -> Iterator[int]:
        consumed = list(self._epoch_starts[epoch])
        sizes = [rows.size for rows in self._rows]
        orders = [self._permutation(d, consumed[d] // sizes[d]) for d in range(len(sizes))]
        offsets = [consumed[d] % sizes[d] for d in range(len(sizes))]
        log = np.full(self._num_rows, -1, dtype=np.int16 if len(sizes) < 2**15 else np.int32)
        self._draw_log[epoch] = log
        first = self.epoch_start(epoch)
        chooser = DomainChooser(self._schedule, (self.seed, _DOMAIN_STREAM, epoch), first)
        for i in range(self._num_rows):
            position = first + i
            domain = chooser.choose(position)
            row = orders[domain][offsets[domain]]
            offsets[domain] += 1
            consumed[domain] += 1
            if offsets[domain] == sizes[domain]:
                orders[domain] = self._permutation(domain, consumed[domain] // sizes[domain])
                offsets[domain] = 0
            log[i] = domain
            self._drawn_until = max(self._drawn_until, position + 1)
            if i == self._num_rows - 1:
                self._epoch_starts[epoch + 1] = consumed
                self.epoch = epoch + 1
            yield int(row)

    def drawn_counts(self, position: int) -> list[int]:
        """How many draws of each domain (in `domains` order) this sampler made before global position `position`.

        Raises:
            ValueError: if the draw just before `position` has not been made yet, or its epoch was forgotten
                (`forget_before`) or lies before the epoch this sampler was restored at.
        """
        epoch, offset = divmod(position, self._num_rows)
        starts = self._epoch_starts.get(epoch)
        if offset == 0 and starts is not None:
            return list(starts)
        log = self._draw_log.get(epoch)
        if starts is None or log is None:
            raise ValueError(
                f"The draws before position {position} are not known to this sampler (its record starts at epoch "
                f"{min(self._epoch_starts)})."
            )
        drawn = log[:offset]
        if offset and drawn[-1] < 0:
            raise ValueError(f"Draw {position - 1} has not been made yet.")
        counts = np.bincount(drawn, minlength=len(self.domains))
        return [int(start + count) for start, count in zip(starts, counts)]

    def forget_before(self, position: int) -> None:
        """Release the draw records of epochs that end before `position` (keeps memory bounded in long runs)."""
        epoch = min(position // self._num_rows, self.epoch)
        for old in [e for e in self._draw_log if e < epoch]:
            del self._draw_log[old]
        for old in [e for e in self._epoch_starts if e < epoch]:
            del self._epoch_starts[old]

    def drawn_domains(self, start: int, end: int) -> list[str]:
        """The domain of each draw at global positions `start <= p < end` (positions must have been drawn)."""
        names = []
        for position in range(start, end):
            epoch, offset = divmod(position, self._num_rows)
            code = self._draw_log[epoch][offset]
            if code < 0:
                raise ValueError(f"Draw {position} has not been made yet.")
            names.append(self.domains[code])
        return names

    def state_dict(self, epoch: int | None = None) -> dict[str, Any]:
        """JSON-serialisable state that replays the stream exactly from the start of `epoch`.

        Args:
            epoch (`int`, *optional*):
                The epoch a resumed run starts by replaying: the Trainer's epoch at the checkpoint. Defaults to the
                epoch being drawn, which near an epoch's end is already the next one, because the DataLoader reads
                ahead of training.
        """
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._epoch_starts:
            raise ValueError(
                f"Cannot describe epoch {epoch}: this sampler has records of epochs {sorted(self._epoch_starts)}."
            )
        return {
            "version": SAMPLER_STATE_VERSION,
            "seed": self.seed,
            "domains": list(self.domains),
            "domain_sizes": [int(rows.size) for rows in self._rows],
            "epoch": epoch,
            "epoch_start_consumed": list(self._epoch_starts[epoch]),
            "schedule": self._schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; the data must have the same domains and domain sizes."""
        if state.get("version", SAMPLER_STATE_VERSION) > SAMPLER_STATE_VERSION:
            raise ValueError(
                f"Sampler state version {state['version']} is newer than this versatune_hf understands "
                f"({SAMPLER_STATE_VERSION}); upgrade versatune_hf to resume from it."
            )
        if list(state["domains"]) != self.domains or list(state["domain_sizes"]) != [r.size for r in self._rows]:
            raise ValueError(
                "The checkpoint's sampler was built for other data: domains "
                f"{state['domains']} with sizes {state['domain_sizes']}, but this train set has {self.domains} with "
                f"sizes {[int(r.size) for r in self._rows]}. Resume with the same train dataset."
            )
        self.seed = int(state["seed"])
        self._schedule.load_state_dict(state["schedule"])
        self._reset_progress(int(state["epoch"]), [int(c) for c in state["epoch_start_consumed"]])
