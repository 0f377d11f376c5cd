"""Where a run's rows come from: the weighted sampler installed in the Trainer's train DataLoader, or the stream the
user trains on, with the mixture's starting weights."""

from __future__ import annotations

from typing import Any

from accelerate.data_loader import get_sampler
from torch.utils.data import IterableDataset
from transformers import Trainer, TrainingArguments

from ..config import VersaTuneConfig
from ..mixing import STRATEGIES, initial_weights_for, resolve_initial_weights
from ..sampling import WeightedDomainSampler, WeightedDomainStream
from ..utils.logs import get_logger
from .labels import resolve_domain_labels

logger = get_logger(__name__)

Source = WeightedDomainSampler | WeightedDomainStream


def sampler_seed(config: VersaTuneConfig, args: TrainingArguments) -> int:
    """The sampler seed: `config.seed`, else `args.data_seed` (the Trainer's data-order seed), else `args.seed`."""
    if config.seed is not None:
        return config.seed
    return args.data_seed if args.data_seed is not None else args.seed


def install_source(
    config: VersaTuneConfig,
    trainer: Trainer | None,
    args: TrainingArguments,
    train_dataloader: Any,
    train_dataset: Any,
) -> Source:
    """Put a `WeightedDomainSampler` into the train DataLoader (or adopt the stream given as `train_dataset`), starting
    from the configured initial weights."""
    warn_if_initial_weights_are_ignored(config)
    if isinstance(train_dataset, WeightedDomainStream):
        return _adopt_stream(config, args, train_dataset)
    if isinstance(train_dataloader.dataset, IterableDataset):
        raise ValueError(
            "The train dataset is an IterableDataset (streaming), which has no rows for a sampler to choose. Build a "
            "WeightedDomainStream from one iterable dataset per domain, train on stream.dataset and give the stream "
            "to the callback: VersaTuneCallback(train_dataset=stream)."
        )
    existing = get_sampler(train_dataloader)
    if isinstance(existing, WeightedDomainSampler):
        return existing
    if getattr(args, "train_sampling_strategy", "random") not in ("random", None):
        logger.warning(
            f"train_sampling_strategy={args.train_sampling_strategy!r} is replaced by VersaTune's weighted sampler."
        )
    loader_rows = len(train_dataloader.dataset)
    prepared = getattr(trainer, "train_dataset", None)
    labels = resolve_domain_labels(config.domain_column, loader_rows, prepared, train_dataset, args)
    counts = labels.counts()
    if len(counts) < 2:
        logger.warning(
            f"The train set has a single domain {list(counts)}: there is no mixture to tune, VersaTune only logs."
        )
    weights = starting_weights(config, counts)
    sampler = WeightedDomainSampler(labels, weights, seed=sampler_seed(config, args))
    train_dataloader.set_sampler(sampler)
    return sampler


def initial_weights_spec(config: VersaTuneConfig) -> str | dict[str, float]:
    """The `initial_weights` the strategy starts from: its own fixed spec, else the configured one."""
    return STRATEGIES[config.strategy].initial_weights or config.initial_weights


def starting_weights(config: VersaTuneConfig, domain_sizes: dict[str, int]) -> dict[str, float]:
    """The strategy's starting weights over `domain_sizes`' domains."""
    spec = resolve_initial_weights(initial_weights_spec(config), domain_sizes)
    return initial_weights_for(config.strategy, spec, config.update_params())


def warn_if_initial_weights_are_ignored(config: VersaTuneConfig) -> None:
    """Say so when the user set `initial_weights` (anything but the default "uniform") for a strategy that always
    starts from fixed weights."""
    fixed = STRATEGIES[config.strategy].fixed_start
    if fixed is not None and config.initial_weights not in ("uniform", fixed):
        logger.warning(
            f"strategy={config.strategy!r} always starts from {fixed} weights, so initial_weights="
            f"{config.initial_weights!r} is ignored. Use strategy='static' (fixed weights) or a dynamic strategy to "
            "start from them."
        )


def _adopt_stream(config: VersaTuneConfig, args: TrainingArguments, stream: WeightedDomainStream) -> Source:
    if args.dataloader_num_workers > 0:
        raise ValueError(
            "A WeightedDomainStream reads VersaTune's weights in the main process, but dataloader workers would "
            "each iterate a copy that never sees an update. Set dataloader_num_workers=0."
        )
    if initial_weights_spec(config) == "proportional":
        raise ValueError(
            "initial_weights='proportional' needs the number of rows per domain, which a stream does not know. "
            "Pass a {domain: weight} dict (e.g. your datasets' sizes) instead."
        )
    stream.restart(starting_weights(config, dict.fromkeys(stream.domains, 1)))
    return stream
