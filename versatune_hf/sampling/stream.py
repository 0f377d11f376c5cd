"""`WeightedDomainStream`: a weighted interleaving of per-domain iterable datasets that follows live weights."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import datasets
import numpy as np

from .domain_codes import count_codes
from .schedule import DomainChooser, ScheduledDraws, WeightSchedule

STREAM_STATE_VERSION = 1
_DOMAIN_STREAM = 0


class WeightedDomainStream(ScheduledDraws):
    r"""
    Interleaves one iterable dataset per domain, choosing the domain of each example from weights that
    [`VersaTuneCallback`] changes during training.

    `datasets.interleave_datasets(..., probabilities=...)` fixes the probabilities when the dataset is built; this
    stream reads them from a schedule of `(position, weights)` entries at every draw, like
    [`WeightedDomainSampler`], so an update lands on the same example in every run and replay. A pass is endless:
    a domain whose dataset is exhausted starts over (after `set_epoch(cycle)` when the dataset has it, which
    reshuffles a shuffled `datasets.IterableDataset`). Each pass replays the same stream from the start for the same
    seed, sources and schedule, which is what makes resume exact (the Trainer skips trained batches by iterating).

    Train on `stream.dataset` (a `datasets.IterableDataset`, so TRL can tokenize it lazily) with `max_steps` set and
    `dataloader_num_workers=0` (the weights live in this process), and give the stream itself to the callback:

    ```python
    stream = WeightedDomainStream({"law": law_iterable, "code": code_iterable}, seed=0)
    trainer = SFTTrainer(..., train_dataset=stream.dataset, callbacks=[VersaTuneCallback(train_dataset=stream)])
    ```

    Args:
        datasets (`Mapping[str, Iterable[dict]]`):
            One iterable of examples per domain, e.g. `datasets.IterableDataset`s loaded with `streaming=True`.
        weights (`Mapping[str, float]`, *optional*):
            Starting weights; uniform when omitted (the callback's `initial_weights` replaces them at train start).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the domain choice.
        domain_column (`str`, *optional*, defaults to `"domain"`):
            Column added to every example with its domain name.
    """

    def __init__(
        self,
        datasets: Mapping[str, Iterable[dict]],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        domain_column: str = "domain",
    ) -> None:
        if not datasets:
            raise ValueError("WeightedDomainStream needs at least one domain dataset.")
        if len(datasets) > 256:
            raise ValueError(f"WeightedDomainStream takes at most 256 domains (a byte per draw), got {len(datasets)}.")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}.")
        self.domains = sorted(datasets)
        self.seed = int(seed)
        self.domain_column = domain_column
        self._sources = dict(datasets)
        self._schedule = WeightSchedule(self.domains, weights)
        self._drawn_until = 0
        self._draw_log = bytearray()
        self.dataset = _as_iterable_dataset(self)

    epoch_length = None
    """A stream has no epochs: positions count draws from the start of the run."""

    def restart(self, weights: Mapping[str, float]) -> None:
        """Forget the schedule and start from `weights` at position 0 (at train start, before the first batch)."""
        self._schedule = WeightSchedule(self.domains, weights)
        self._drawn_until = 0

    def set_epoch(self, epoch: int) -> None:
        """Accepted for the sampler interface; a stream is one endless pass."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        chooser = DomainChooser(self._schedule, (self.seed, _DOMAIN_STREAM), 0)
        iterators = {name: iter(source) for name, source in self._sources.items()}
        cycles = dict.fromkeys(self.domains, 0)
        self._draw_log = bytearray()
        self._drawn_until = 0
        position = 0
        while True:
            code = chooser.choose(position)
            domain = self.domains[code]
            try:
                example = next(iterators[domain])
            except StopIteration:
                cycles[domain] += 1
                source = self._sources[domain]
                if hasattr(source, "set_epoch"):
                    source.set_epoch(cycles[domain])
                iterators[domain] = iter(source)
                example = next(iterators[domain], None)
                if example is None:
                    raise ValueError(f"The dataset of domain {domain!r} is empty.") from None
            self._draw_log.append(code)
            position += 1
            self._drawn_until = position
            yield {**example, self.domain_column: domain}

    def drawn_counts(self, position: int) -> list[int]:
        """How many draws of each domain (in `domains` order) the current pass made before `position`."""
        if position > len(self._draw_log):
            raise ValueError(f"Draw {position - 1} has not been made yet.")
        codes = np.frombuffer(self._draw_log, dtype=np.uint8, count=position)
        return count_codes(codes, len(self.domains)).tolist()

    def forget_before(self, position: int) -> None:
        """Kept for the sampler interface: a pass is replayed from its start, so its record is kept whole."""

    def drawn_domains(self, start: int, end: int) -> list[str]:
        """The domain of each draw at positions `start <= p < end` of the current pass."""
        if end > len(self._draw_log):
            raise ValueError(f"Draw {end - 1} has not been made yet.")
        return [self.domains[code] for code in self._draw_log[start:end]]

    def state_dict(self, epoch: int | None = None, position: int | None = None) -> dict[str, Any]:
        """JSON-serialisable state; with the same sources, a pass replays the stream exactly. `epoch` and `position`
        are accepted for the sampler interface: a resumed Trainer reads a stream from its start (and tokenizes what it
        skips), so the whole schedule is kept; with eval-loss strategies it has one entry per evaluation."""
        return {
            "version": STREAM_STATE_VERSION,
            "kind": "stream",
            "seed": self.seed,
            "domains": list(self.domains),
            "schedule": self._schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != "stream" or list(state["domains"]) != self.domains:
            raise ValueError(
                f"The checkpoint's VersaTune state is for other data (domains {state.get('domains')}); this stream "
                f"has {self.domains}. Resume with the same datasets."
            )
        self.seed = int(state["seed"])
        self._schedule.load_state_dict(state["schedule"])
        self._drawn_until = 0


def _generate(stream: WeightedDomainStream) -> Iterator[dict[str, Any]]:
    yield from stream


def _as_iterable_dataset(stream: WeightedDomainStream) -> datasets.IterableDataset:
    """The stream as a `datasets.IterableDataset` (what TRL's lazy tokenization expects)."""
    features = None
    first = stream._sources[stream.domains[0]]
    if getattr(first, "features", None) is not None:
        features = datasets.Features({**first.features, stream.domain_column: datasets.Value("string")})
    return datasets.IterableDataset.from_generator(_generate, gen_kwargs={"stream": stream}, features=features)
