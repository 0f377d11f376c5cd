"""VersaTune dynamic domain mixtures for Hugging Face `Trainer` and TRL `SFTTrainer`.

The public names below are imported on first use, so that `import versatune_hf.mixing` and `versatune --help` do not
load torch and transformers.

Layers (each a subpackage): `mixing` (pure weight math, no torch), `sampling` (the sampler, the stream and their
weight schedule), `integrations` (everything that knows Trainer, TRL or accelerate), `detection` (Phase 1), `demo`
and `recipes` (the runners behind `versatune demo` and `recipes/*.py`), `utils` (files and plots).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "STRATEGIES": "versatune_hf.mixing.strategies",
    "UpdateParams": "versatune_hf.mixing.strategies",
    "WeightUpdate": "versatune_hf.mixing.strategies",
    "compute_update": "versatune_hf.mixing.strategies",
    "VersaTuneConfig": "versatune_hf.config",
    "VersaTuneArguments": "versatune_hf.arguments",
    "WeightedDomainSampler": "versatune_hf.sampling.sampler",
    "WeightedDomainStream": "versatune_hf.sampling.stream",
    "VersaTuneCallback": "versatune_hf.integrations.callback",
    "VersaTuneSFTTrainer": "versatune_hf.integrations.sft_trainer",
}

__all__ = list(_PUBLIC)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` imports each name on first use
    from .arguments import VersaTuneArguments  # noqa: F401
    from .config import VersaTuneConfig  # noqa: F401
    from .integrations.callback import VersaTuneCallback  # noqa: F401
    from .integrations.sft_trainer import VersaTuneSFTTrainer  # noqa: F401
    from .mixing.strategies import STRATEGIES, UpdateParams, WeightUpdate, compute_update  # noqa: F401
    from .sampling.sampler import WeightedDomainSampler  # noqa: F401
    from .sampling.stream import WeightedDomainStream  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'versatune_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
