"""`VersaTuneConfig`: every option of the VersaTune mixture, validated in one place."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .mixing.online_mixing import DEFAULT_ODM_SMOOTHING
from .mixing.strategies import STRATEGIES, UpdateParams
from .utils.logs import get_logger

logger = get_logger(__name__)

CONFIG_VERSION = 1
NAMED_INITIAL_WEIGHTS = ("uniform", "proportional")


@dataclass
class VersaTuneConfig:
    r"""
    Configuration of the VersaTune domain mixture.

    Every field is also a keyword argument of [`VersaTuneCallback`].

    Parameters:
        > Data

        domain_column (`str`, *optional*, defaults to `"domain"`):
            Column of the train dataset that holds each row's domain name.

        > Strategy

        strategy (`str`, *optional*, defaults to `"versatune"`):
            How the domain weights change after each evaluation. One of `"versatune"` (paper: learnable potential
            γ, optional forgetting term, multiplicative update), `"versatune-official"` (released code: raw eval
            loss as the score), `"expansion"` (grow `target_domain`, protect the others from forgetting),
            `"uniform"`, `"static"` (keep `initial_weights`), `"inverse"` (1 − p of `initial_weights`,
            renormalised, kept fixed), `"proportional"` (fixed, proportional to rows per domain), and the peers
            `"doremi"` (excess loss over the reference, softmax of log-weights, mixed with uniform) and `"dbl"`
            (Sheared-LLaMA dynamic batch loading: w·exp(max(ℓ − ℓ_ref, 0))) and `"odm"` (Online Data Mixing: an
            Exp3 bandit rewarded with each domain's *training* loss, updated every `odm_update_steps` optimizer steps
            instead of at evaluations; it needs no eval sets), and `"progress"` (not in the paper: learning
            progress per unit of share, π_d / (w_d · Σ π) with π_d the relative fall of a domain's eval loss since
            the previous evaluation, with the highest-loss domain protected; the rule that beat uniform from the
            pretrained base at a gentle learning rate, see the README's benchmarks).
        eta (`float`, *optional*):
            Step size η of the multiplicative update `w ← w · exp(η · score)`. Defaults to `1.0`, and to `0.5` for
            `"progress"` (the value its benchmark used).
        forgetting_weight (`float`, *optional*, defaults to `0.0`):
            λ in the `"versatune"` score `γ + λ · φ`, where φ is the relative rise of a domain's eval loss since the
            previous evaluation.
        initial_weights (`str` or `dict[str, float]`, *optional*, defaults to `"uniform"`):
            Starting mixture: `"uniform"`, `"proportional"` (to the number of train rows per domain), a dict
            `{domain: weight}` (normalised to sum to 1), or the path of a JSON file with per-domain shares, such as
            a Phase 1 detection result (`{"shares": {...}}` or a plain `{domain: share}` mapping).
        reference_losses (`dict[str, float]`, *optional*):
            Per-domain reference eval loss ℓ_ref used by γ = max((ℓ − ℓ_ref) / ℓ, 0). Use an *eval* loss of a strong
            or specialised model on the same held-out sets; a training loss near 0 makes every γ ≈ 1 and the update
            does nothing.
        reference_model (`str`, *optional*):
            Path or Hub id of a causal LM whose eval loss on each domain's eval set is measured at train start and
            used as `reference_losses`. Ignored when `reference_losses` is given.
        target_domain (`str`, *optional*):
            Domain to grow with the `"expansion"` strategy.
        target_max_weight (`float`, *optional*, defaults to `0.9`):
            Share the target domain grows toward with the `"expansion"` strategy.
        progress_worst_lift (`float`, *optional*, defaults to `0.05`):
            With `"progress"`: at every update after the first, the domain with the highest eval loss keeps at least
            (1 + this) times its share, up to twice the uniform share (2 / N), the others sharing the rest in the
            update's proportions. The lift compounds: measured with an evaluation every 50 of 300 steps, law's share
            reached 0.203 at the end; with many more evaluations per run a smaller lift keeps the same total. `0`
            only keeps its share from falling; `None` drops the protection (then that domain's loss can end worse
            than under a uniform mixture, as measured).

        odm_smoothing (`float`, *optional*, defaults to `0.9`):
            α of the `"odm"` reward estimate R̂ ← α · R̂ + (1 − α) · L / π.
        odm_update_steps (`int`, *optional*, defaults to `1`):
            Optimizer steps per `"odm"` bandit round (the paper plays one round per step). Each round adds one entry
            to the sampler's schedule and one line to the history file, so a long run may prefer 10 or more.

        > Guards

        min_weight (`float`, *optional*, defaults to `0.01`):
            Floor on every domain's weight after an update, so that no domain is starved (DoReMi-style mixtures
            collapse to near one-hot weights without it). Must be below `1 / number of domains`.
        max_weight_change (`float`, *optional*):
            Largest absolute change of any domain's weight in one update; the update is scaled down to respect it.
        smoothing (`float`, *optional*, defaults to `0.0`):
            Mix this fraction of the uniform distribution into every update.
        divergence_factor (`float`, *optional*, defaults to `10.0`):
            A domain whose eval loss is more than this many times its previous eval loss (at the first evaluation:
            the median loss of the domains) is treated as diverged, not as a domain to feed: its weight is kept for
            that update, its loss is not remembered as the previous one, and a warning says so. One evaluation that
            jumps by orders of magnitude (fp16 overflow, a bad batch) then cannot send the mixture to the floor.
            `None` or `inf` (`--versatune_divergence_factor inf` on a command line) turns the check off.

        > Sampling

        seed (`int`, *optional*):
            Seed of the sampler. Defaults to the Trainer's `args.seed`, which is the same on every rank.
        switch_delay_steps (`int`, *optional*):
            New weights start this many optimizer steps after the evaluation that produced them. By default it is
            computed from gradient accumulation, dataloader workers and prefetching so that every rank switches at the
            same draw before its loader has read past it.
        history_file (`str`, *optional*, defaults to `"versatune_history.jsonl"`):
            File in `output_dir` that receives one JSON line per weight update.
    """

    domain_column: str = field(default="domain", metadata={"help": "Train dataset column with each row's domain."})
    strategy: str = field(default="versatune", metadata={"help": f"One of {sorted(STRATEGIES)}."})
    eta: float | None = field(
        default=None,
        metadata={"help": "Step size of the multiplicative weight update; default 1.0 (0.5 for 'progress')."},
    )
    forgetting_weight: float = field(default=0.0, metadata={"help": "λ: weight of the forgetting degree φ."})
    initial_weights: str | dict[str, float] = field(
        default="uniform",
        metadata={"help": "'uniform', 'proportional', a {domain: weight} dict or a path to a JSON file of shares."},
    )
    reference_losses: dict[str, float] | None = field(
        default=None, metadata={"help": "Per-domain reference eval loss used by the learnable potential γ."}
    )
    reference_model: str | None = field(
        default=None, metadata={"help": "Model whose eval losses become the reference losses at train start."}
    )
    target_domain: str | None = field(default=None, metadata={"help": "Domain grown by the 'expansion' strategy."})
    target_max_weight: float = field(default=0.9, metadata={"help": "Cap on the target domain's share."})
    progress_worst_lift: float | None = field(
        default=0.05,
        metadata={"help": "'progress': the highest-loss domain's share grows at least this factor per update."},
    )
    odm_smoothing: float = field(default=DEFAULT_ODM_SMOOTHING, metadata={"help": "α of the odm reward estimate."})
    odm_update_steps: int = field(default=1, metadata={"help": "Optimizer steps per odm bandit round."})
    min_weight: float = field(default=0.01, metadata={"help": "Floor on every domain's weight."})
    max_weight_change: float | None = field(
        default=None, metadata={"help": "Largest absolute change of one domain's weight per update."}
    )
    smoothing: float = field(default=0.0, metadata={"help": "Fraction of the uniform distribution mixed in."})
    divergence_factor: float | None = field(
        default=10.0,
        metadata={"help": "Hold a domain's weight when its eval loss jumps by more than this factor; None: never."},
    )
    seed: int | None = field(default=None, metadata={"help": "Sampler seed; defaults to the Trainer's seed."})
    switch_delay_steps: int | None = field(
        default=None, metadata={"help": "Steps between an evaluation and the draw where its weights start."}
    )
    history_file: str = field(
        default="versatune_history.jsonl", metadata={"help": "JSON-lines log of updates, inside output_dir."}
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}. Choose one of: {', '.join(sorted(STRATEGIES))}.")
        if self.eta is None:
            self.eta = STRATEGIES[self.strategy].default_eta
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"eta must be a positive number, got {self.eta}.")
        if not (math.isfinite(self.forgetting_weight) and self.forgetting_weight >= 0):
            raise ValueError(f"forgetting_weight must be >= 0, got {self.forgetting_weight}.")
        if not 0.0 <= self.min_weight < 1.0:
            raise ValueError(f"min_weight must be in [0, 1), got {self.min_weight}.")
        if self.max_weight_change is not None and not 0.0 < self.max_weight_change <= 1.0:
            raise ValueError(f"max_weight_change must be in (0, 1] or None, got {self.max_weight_change}.")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}.")
        if self.divergence_factor is not None and not self.divergence_factor > 1:
            raise ValueError(
                f"divergence_factor must be above 1 (None or inf: no check), got {self.divergence_factor}."
            )
        if self.progress_worst_lift is not None and not (
            math.isfinite(self.progress_worst_lift) and self.progress_worst_lift >= 0
        ):
            raise ValueError(
                f"progress_worst_lift must be >= 0 (0: only never lower the worst domain's share; None: no "
                f"protection), got {self.progress_worst_lift}."
            )
        if not 0.0 < self.target_max_weight <= 1.0:
            raise ValueError(f"target_max_weight must be in (0, 1], got {self.target_max_weight}.")
        if self.strategy == "expansion" and self.target_domain is None:
            raise ValueError("strategy='expansion' needs target_domain=<the domain to grow>.")
        if not 0.0 <= self.odm_smoothing < 1.0:
            raise ValueError(f"odm_smoothing must be in [0, 1), got {self.odm_smoothing}.")
        if self.odm_update_steps < 1:
            raise ValueError(f"odm_update_steps must be >= 1, got {self.odm_update_steps}.")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}.")
        if self.switch_delay_steps is not None and self.switch_delay_steps < 1:
            raise ValueError(f"switch_delay_steps must be >= 1, got {self.switch_delay_steps}.")
        if isinstance(self.initial_weights, dict):
            for name, value in self.initial_weights.items():
                if isinstance(value, bool) or not (
                    isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
                ):
                    raise ValueError(
                        f"initial_weights[{name!r}] = {value!r}: weights must be finite and non-negative."
                    )
        if self.reference_losses is not None:
            for name, value in self.reference_losses.items():
                if isinstance(value, bool) or not (
                    isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
                ):
                    raise ValueError(f"reference_losses[{name!r}] = {value!r}: losses must be finite and >= 0.")

    def update_params(self) -> UpdateParams:
        """The fields the strategies read, as a plain `UpdateParams`."""
        return UpdateParams(
            eta=self.eta,
            forgetting_weight=self.forgetting_weight,
            target_domain=self.target_domain,
            target_max_weight=self.target_max_weight,
            min_weight=self.min_weight,
            max_weight_change=self.max_weight_change,
            smoothing=self.smoothing,
            divergence_factor=self.divergence_factor,
            progress_worst_lift=self.progress_worst_lift,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the fields, stamped with the config version."""
        return {**dataclasses.asdict(self), "config_version": CONFIG_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersaTuneConfig:
        """Build a config from `to_dict()` output; unknown keys (from a newer version) are ignored with a warning."""
        data = dict(data)
        version = data.pop("config_version", CONFIG_VERSION)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning(
                f"Ignoring unknown VersaTuneConfig keys {unknown} (saved by config version {version}; this is "
                f"version {CONFIG_VERSION})."
            )
        return cls(**{key: value for key, value in data.items() if key in known})
