"""`WeightedDomainSampler`: draws train rows by domain from weights that may change during an epoch."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from .domain_codes import DomainCodes, code_dtype, count_codes, encode_label_list
from .schedule import ScheduledDraws, WeightSchedule, choose_codes

SAMPLER_STATE_VERSION = 2
_DOMAIN_STREAM, _ORDER_STREAM = 0, 1
BLOCK_DRAWS = 8192
"""Draws computed at once: numpy does the work, Python only hands out the indices."""


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

    Draws are computed with numpy, `BLOCK_DRAWS` at a time, and handed out one by one; weights scheduled inside a
    computed block recompute the rest of it, so the stream is the same as if every draw were made on its own.
    Memory: 4 bytes per row for the per-domain permutations and 1 byte per draw of the epochs still recorded.

    Each epoch yields `len(domain_labels)` indices, so the Trainer's step count per epoch is unchanged.

    Args:
        domain_labels (`Sequence[str]` or `DomainCodes`):
            The domain of every train row, in the DataLoader's row order: names, or codes from
            `versatune_hf.sampling.domain_codes` (what the callback reads from a dataset through Arrow).
        weights (`Mapping[str, float]`, *optional*):
            Starting weights, one per domain; uniform when omitted.
        seed (`int`, *optional*, defaults to `0`):
            Seed of both random streams. Use the same seed on every rank.
        domains (`Sequence[str]`, *optional*):
            Domain order used in the state and logs; defaults to the sorted distinct labels. Every listed domain
            must have at least one row.
    """

    replayed_head: int = 0
    """Draws at the start of an epoch that a resumed run needs for real even when the Trainer skips past them
    (accelerate pads an epoch's last batches with its first ones); `MixtureRun` sets it to one optimizer step."""

    def __init__(
        self,
        domain_labels: Sequence[str] | DomainCodes,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        domains: Sequence[str] | None = None,
    ) -> None:
        encoded = domain_labels if isinstance(domain_labels, DomainCodes) else encode_label_list(domain_labels)
        if not encoded.names:
            raise ValueError("WeightedDomainSampler needs at least one row; the train dataset is empty.")
        self.domains: list[str] = list(domains) if domains is not None else list(encoded.names)
        unknown = sorted(set(encoded.names) - set(self.domains))
        if unknown:
            raise ValueError(f"Rows are labelled with domains {unknown} that are not in domains={self.domains}.")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}.")
        self._code_dtype = code_dtype(len(self.domains))
        codes = encoded.codes
        if list(encoded.names) != self.domains:
            renumber = np.array([self.domains.index(name) for name in encoded.names], dtype=self._code_dtype)
            codes = renumber[codes]
        self._orders = _rows_by_domain(codes, len(self.domains))
        empty = [name for name, rows in zip(self.domains, self._orders) if rows.size == 0]
        if empty:
            raise ValueError(
                f"Domains {empty} have no train rows. Remove them from the domain list or add data for them."
            )
        self._order_cycles: list[int | None] = [None] * len(self.domains)  # None: sorted, no cycle drawn yet
        self._sizes = np.array([rows.size for rows in self._orders], dtype=np.int64)
        self.seed = int(seed)
        self._num_rows = int(codes.size)
        self._schedule = WeightSchedule(self.domains, weights)
        self._reset_progress(epoch=0, consumed=[0] * len(self.domains))

    def _reset_progress(self, epoch: int, consumed: list[int], resume: _Resume | None = None) -> None:
        self.epoch = epoch
        self._epoch_starts: dict[int, list[int]] = {epoch: list(consumed)}
        self._resume = resume
        self._furthest = epoch * self._num_rows
        self._live: _Handout | None = None
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
        return dict(zip(self.domains, self._sizes.tolist()))

    @property
    def _drawn_until(self) -> int:
        live = 0 if self._live is None else self._live.position
        return max(self._furthest, live)

    def epoch_start(self, epoch: int) -> int:
        """Global position of the first draw of `epoch`."""
        return epoch * self._num_rows

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw `epoch`; a later epoch is reached by counting the draws of the epochs in
        between, without making them."""
        if epoch not in self._epoch_starts and epoch < min(self._epoch_starts):
            raise ValueError(
                f"Cannot go back to epoch {epoch}: this sampler's state starts at epoch {min(self._epoch_starts)}."
            )
        self._count_epochs_until(epoch)
        self.epoch = epoch

    def _count_epochs_until(self, epoch: int) -> None:
        """Record where each epoch up to `epoch` starts, counting the draws of those not drawn yet."""
        while max(self._epoch_starts) < epoch:
            last = max(self._epoch_starts)
            self._epoch_starts[last + 1] = self._counts_before(self.epoch_start(last + 1), counted=True)

    def __iter__(self) -> Iterator[int]:
        return self._draw_epoch(self.epoch)

    # ------------------------------------------------------------------ drawing

    def _draw_epoch(self, epoch: int) -> Iterator[int]:
        first, end = self.epoch_start(epoch), self.epoch_start(epoch + 1)
        log = np.full(self._num_rows, -1, dtype=self._code_dtype)
        self._draw_log[epoch] = log
        for start, stop, consumed in self._plan(epoch):
            if consumed is None:  # skipped by the resumed Trainer: never read, so not computed
                skipped = itertools.repeat(self._num_rows, stop - start)
                yield from self._hand_out(_Handout(start, stop - start, skipped))
                continue
            walk = _Walk(self, epoch, start, consumed)
            while walk.position < stop:
                block = walk.next_block(min(walk.position + BLOCK_DRAWS, stop), log[walk.position - first :])
                if block.end != end:
                    yield from self._hand_out(block)
                    continue
                # The epoch's last draw: record where the next epoch starts before handing it out, so that a
                # DataLoader that stops right after it leaves a complete record.
                yield from self._hand_out(block, itertools.islice(block.iterator, len(block.rows) - 1))
                if block.end == end:
                    self._epoch_starts[epoch + 1] = walk.consumed.tolist()
                    self.epoch = epoch + 1
                    yield next(block.iterator)

    def _hand_out(self, block: _Handout, iterator: Iterator[int] | None = None) -> Iterator[int]:
        if self._live is not None:
            self._furthest = max(self._furthest, self._live.position)
        self._live = block
        return block.iterator if iterator is None else iterator

    def _plan(self, epoch: int) -> list[tuple[int, int, list[int] | None]]:
        """`(start, stop, counts before start)` pieces of the epoch; `None` counts mark the draws a resumed Trainer
        skips (see `state_dict(position=...)`)."""
        first, end = self.epoch_start(epoch), self.epoch_start(epoch + 1)
        resume = self._resume
        if resume is None or resume.epoch != epoch:
            return [(first, end, self._epoch_starts[epoch])]
        return [
            (first, resume.skipped_from, self._epoch_starts[epoch]),
            (resume.skipped_from, resume.position, None),
            (resume.position, end, resume.consumed),
        ]

    def _order(self, domain: int, cycle: int) -> np.ndarray:
        """The rows of `domain` in the order of its `cycle`-th walk (a permutation of its sorted rows)."""
        if self._order_cycles[domain] != cycle:
            rows = self._orders[domain]
            if self._order_cycles[domain] is not None:
                rows.sort()
            np.random.default_rng([self.seed, _ORDER_STREAM, domain, cycle]).shuffle(rows)
            self._order_cycles[domain] = cycle
        return self._orders[domain]

    def set_weights(self, weights: Mapping[str, float], position: int) -> None:
        """Schedule `weights` to choose domains from draw `position` on.

        Raises:
            RuntimeError: if the draw at `position` was already made; applying the weights later would make this
                process's stream differ from the other ranks' and from a resumed run.
        """
        super().set_weights(weights, position)
        if self._live is not None:
            self._live.truncate(position)

    # ------------------------------------------------------------------ records of the draws made

    def drawn_counts(self, position: int) -> list[int]:
        """How many draws of each domain (in `domains` order) this sampler made before global position `position`.

        Raises:
            ValueError: if the draw just before `position` has not been made yet, or its epoch was forgotten
                (`forget_before`) or lies before the epoch this sampler was restored at.
        """
        if position > self._drawn_until:
            raise ValueError(f"Draw {position - 1} has not been made yet.")
        return self._counts_before(position)

    def _counts_before(self, position: int, counted: bool = False) -> list[int]:
        """Draws of each domain before `position`: from the draw log where the draws were made, else (`counted`) by
        computing the domain choices from the nearest known point, without making the draws."""
        epoch, offset = divmod(position, self._num_rows)
        if offset == 0 and epoch in self._epoch_starts:
            return list(self._epoch_starts[epoch])
        if offset == 0:
            epoch, offset = epoch - 1, self._num_rows
        first = self.epoch_start(epoch)
        anchor, counts = first, self._epoch_starts.get(epoch)
        resume = self._resume if self._resume is not None and self._resume.epoch == epoch else None
        if resume is not None and resume.skipped_from < position < resume.position:
            raise ValueError(
                f"The draws before position {position} are not known to this sampler: the resumed run skips draws "
                f"{resume.skipped_from} to {resume.position - 1} without making them."
            )
        if resume is not None and position >= resume.position:
            anchor, counts = resume.position, resume.consumed
        if counts is None:
            raise ValueError(
                f"The draws before position {position} are not known to this sampler (its record starts at epoch "
                f"{min(self._epoch_starts)})."
            )
        log = self._draw_log.get(epoch)
        drawn = None if log is None else log[anchor - first : offset]
        if drawn is not None and (drawn.size == 0 or drawn.min() >= 0) and position <= self._drawn_until:
            return (np.asarray(counts) + count_codes(drawn, len(self.domains))).tolist()
        if not counted:
            raise ValueError(f"The draws before position {position} were not recorded (epoch {epoch} was forgotten).")
        return _Walk(self, epoch, anchor, counts).count_until(position).tolist()

    def drawn_codes(self, positions: np.ndarray) -> np.ndarray:
        """The domain code (index into `domains`) of the draw at each of `positions` (all already made)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return np.zeros(0, dtype=self._code_dtype)
        first_epoch, last_epoch = int(positions.min()) // self._num_rows, int(positions.max()) // self._num_rows
        if first_epoch == last_epoch and first_epoch in self._draw_log:
            codes = self._draw_log[first_epoch][positions - self.epoch_start(first_epoch)]
        else:
            codes = np.full(positions.shape, -1, dtype=self._code_dtype)
            epochs = positions // self._num_rows
            for epoch in range(first_epoch, last_epoch + 1):
                if epoch in self._draw_log:
                    chosen = epochs == epoch
                    codes[chosen] = self._draw_log[epoch][positions[chosen] - self.epoch_start(epoch)]
        if int(codes.min()) < 0 or int(positions.max()) >= self._drawn_until:
            unknown = (codes < 0) | (positions >= self._drawn_until)
            raise ValueError(f"Draw {int(positions[unknown][0])} has not been made yet or was not recorded.")
        return codes

    def drawn_domains(self, start: int, end: int) -> list[str]:
        """The domain of each draw at global positions `start <= p < end` (positions must have been drawn)."""
        return [self.domains[code] for code in self.drawn_codes(np.arange(start, end)).tolist()]

    def forget_before(self, position: int) -> None:
        """Release the draw records of epochs that end before `position` (keeps memory bounded in long runs)."""
        epoch = min(position // self._num_rows, self.epoch)
        for old in [e for e in self._draw_log if e < epoch]:
            del self._draw_log[old]
        for old in [e for e in self._epoch_starts if e < epoch]:
            del self._epoch_starts[old]
        if self._resume is not None and self._resume.epoch < epoch:
            self._resume = None

    # ------------------------------------------------------------------ state

    def state_dict(self, epoch: int | None = None, position: int | None = None) -> dict[str, Any]:
        """JSON-serialisable state that replays the stream exactly from the start of `epoch`.

        Args:
            epoch (`int`, *optional*):
                The epoch a resumed run starts by replaying: the Trainer's epoch at the checkpoint. Defaults to the
                epoch being drawn, which near an epoch's end is already the next one, because the DataLoader reads
                ahead of training.
            position (`int`, *optional*):
                The first draw the resumed run trains on (the checkpoint's step). The Trainer skips the trained draws
                of the epoch by iterating the sampler and discarding them (`skip_first_batches`), so the state then
                describes only what it still reads: the epoch's first `replayed_head` draws and the draws from
                `position` on. The schedule entries in between are left out, which keeps the state bounded however
                many updates the run made, and the restored sampler hands out `len(sampler)` (an index no dataset
                has, so a loader that fetched it would fail loudly) for the skipped draws.
        """
        epoch = self.epoch if epoch is None else epoch
        if epoch < min(self._epoch_starts):
            raise ValueError(
                f"Cannot describe epoch {epoch}: this sampler's state starts at epoch {min(self._epoch_starts)}."
            )
        self._count_epochs_until(epoch)
        first = self.epoch_start(epoch)
        resume = None
        skipped_from = first + min(self.replayed_head, self._num_rows)
        if position is not None and skipped_from < position < self.epoch_start(epoch + 1):
            resume = {"skipped": [skipped_from, position], "consumed": self._counts_before(position, counted=True)}
            ranges: list[tuple[int, int | None]] = [(first, skipped_from), (position, None)]
        else:
            ranges = [(first, None)]
        return {
            "version": SAMPLER_STATE_VERSION,
            "seed": self.seed,
            "domains": list(self.domains),
            "domain_sizes": self._sizes.tolist(),
            "epoch": epoch,
            "epoch_start_consumed": list(self._epoch_starts[epoch]),
            "resume": resume,
            "schedule": [[start, list(vector)] for start, vector in self._schedule.needed(ranges)],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; the data must have the same domains and domain sizes. Reading a state costs
        O(domains + schedule entries): nothing is replayed."""
        if state.get("version", SAMPLER_STATE_VERSION) > SAMPLER_STATE_VERSION:
            raise ValueError(
                f"Sampler state version {state['version']} is newer than this versatune_hf understands "
                f"({SAMPLER_STATE_VERSION}); upgrade versatune_hf to resume from it."
            )
        if list(state["domains"]) != self.domains or list(state["domain_sizes"]) != self._sizes.tolist():
            raise ValueError(
                "The checkpoint's sampler was built for other data: domains "
                f"{state['domains']} with sizes {state['domain_sizes']}, but this train set has {self.domains} with "
                f"sizes {self._sizes.tolist()}. Resume with the same train dataset."
            )
        self.seed = int(state["seed"])
        self._schedule.load_state_dict(state["schedule"])
        # The permutations were shuffled with the old seed: make each one again when it is next drawn from.
        self._order_cycles = [None if cycle is None else -1 for cycle in self._order_cycles]
        epoch = int(state["epoch"])
        saved = state.get("resume")  # version 1 states replay the whole epoch
        resume = None
        if saved is not None:
            skipped_from, position = (int(value) for value in saved["skipped"])
            resume = _Resume(epoch, skipped_from, position, [int(c) for c in saved["consumed"]])
        self._reset_progress(epoch, [int(c) for c in state["epoch_start_consumed"]], resume)


class _Resume:
    """Where a restored sampler resumes inside `epoch`: draws `skipped_from <= p < position` are skipped by the
    Trainer, and `consumed` are the per-domain counts before `position`."""

    def __init__(self, epoch: int, skipped_from: int, position: int, consumed: list[int]) -> None:
        self.epoch, self.skipped_from, self.position, self.consumed = epoch, skipped_from, position, consumed


class _Handout:
    """Indices handed out one at a time through `iterator`, from position `start` on."""

    def __init__(self, start: int, count: int, iterator: Iterator[int]) -> None:
        self.start, self._count, self.iterator = start, count, iterator

    @property
    def end(self) -> int:
        return self.start + self._count

    @property
    def position(self) -> int:
        """Position just after the last index handed out."""
        return self.end - operator.length_hint(self.iterator)

    def truncate(self, position: int) -> None:
        """Weights start at `position`: draws computed for it and after must be made again (none here)."""


class _Block(_Handout):
    """Draws computed at once by `walk`; `truncate` drops those not handed out yet from a position on (new weights
    start there), and the walk resumes from that position."""

    def __init__(
        self, start: int, rows: list[int], walk: _Walk, codes: np.ndarray, uniforms: np.ndarray, consumed: np.ndarray
    ) -> None:
        super().__init__(start, len(rows), iter(rows))
        self.rows, self.walk, self.codes, self.uniforms, self.consumed_before = rows, walk, codes, uniforms, consumed

    @property
    def end(self) -> int:
        return self.start + len(self.rows)

    def truncate(self, position: int) -> None:
        if self.position <= position < self.end:
            kept = position - self.start
            del self.rows[kept:]
            self.walk.rewind(self, kept)


class _Walk:
    """Makes the draws of one epoch from `position` on, given the per-domain draw counts before it."""

    def __init__(self, sampler: WeightedDomainSampler, epoch: int, position: int, consumed: Sequence[int]) -> None:
        self.sampler = sampler
        self.position = position
        self.consumed = np.array(consumed, dtype=np.int64)
        self._uniforms = np.random.default_rng([sampler.seed, _DOMAIN_STREAM, epoch])
        self._uniforms.bit_generator.advance(position - sampler.epoch_start(epoch))  # one 64-bit number per draw
        self._pending = np.empty(0)

    def _next_uniforms(self, count: int) -> np.ndarray:
        taken, self._pending = self._pending[:count], self._pending[count:]
        if taken.size == count:
            return taken
        return np.concatenate([taken, self._uniforms.random(count - taken.size)])

    def _next_codes(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        uniforms = self._next_uniforms(stop - self.position)
        codes = choose_codes(self.sampler._schedule, self.position, uniforms, self.sampler._code_dtype)
        return uniforms, codes

    def next_block(self, stop: int, log: np.ndarray) -> _Block:
        """Make the draws up to `stop` (recording their domains in `log`, which starts at this walk's position)."""
        sampler = self.sampler
        uniforms, codes = self._next_codes(stop)
        rows = np.empty(codes.size, dtype=np.int64)
        consumed_before = self.consumed.copy()
        sizes = sampler._sizes
        for domain, draws in enumerate(_positions_by_code(codes, len(sampler.domains))):
            filled = 0
            while filled < draws.size:
                cycle, offset = divmod(int(self.consumed[domain]), int(sizes[domain]))
                take = min(draws.size - filled, int(sizes[domain]) - offset)
                rows[draws[filled : filled + take]] = sampler._order(domain, cycle)[offset : offset + take]
                filled += take
                self.consumed[domain] += take
        log[: codes.size] = codes
        block = _Block(self.position, rows.tolist(), self, codes, uniforms, consumed_before)
        self.position = stop
        return block

    def rewind(self, block: _Block, kept: int) -> None:
        """Continue from the `kept`-th draw of `block` (its later draws are made again, with the schedule as now)."""
        self.position = block.start + kept
        self.consumed = block.consumed_before + np.bincount(block.codes[:kept], minlength=self.consumed.size)
        self._pending = np.concatenate([block.uniforms[kept:], self._pending])

    def count_until(self, stop: int) -> np.ndarray:
        """The per-domain counts before `stop`, computing only the domain choices (no rows, nothing recorded)."""
        while self.position < stop:
            end = min(self.position + 16 * BLOCK_DRAWS, stop)
            _, codes = self._next_codes(end)
            self.consumed += np.bincount(codes, minlength=self.consumed.size)
            self.position = end
        return self.consumed


def _positions_by_code(codes: np.ndarray, num_domains: int) -> list[np.ndarray]:
    """For each code, the positions in `codes` that hold it, in order."""
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=num_domains))
    return np.split(order, bounds[:-1])


def _rows_by_domain(codes: np.ndarray, num_domains: int) -> list[np.ndarray]:
    """The row indices of each domain, ascending, as the smallest index type (filled a chunk at a time, so the
    transient memory stays a few MiB whatever the number of rows)."""
    dtype = np.int32 if codes.size < 2**31 else np.int64
    sizes = count_codes(codes, num_domains)
    rows = [np.empty(int(size), dtype=dtype) for size in sizes]
    filled = [0] * num_domains
    for start in range(0, codes.size, BLOCK_DRAWS * 8):
        chunk = codes[start : start + BLOCK_DRAWS * 8]
        for domain, positions in enumerate(_positions_by_code(chunk, num_domains)):
            rows[domain][filled[domain] : filled[domain] + positions.size] = positions
            rows[domain][filled[domain] : filled[domain] + positions.size] += start
            filled[domain] += positions.size
    return rows
