"""VersaTune dynamic domain mixtures for Hugging Face `Trainer` and TRL `SFTTrainer`."""

from .callback import VersaTuneCallback
from .config import VersaTuneConfig
from .sampler import WeightedDomainSampler
from .strategies import STRATEGIES, UpdateParams, WeightUpdate, compute_update
from .stream import WeightedDomainStream
from .trainer import VersaTuneSFTTrainer

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "UpdateParams",
    "VersaTuneCallback",
    "VersaTuneConfig",
    "VersaTuneSFTTrainer",
    "WeightUpdate",
    "WeightedDomainSampler",
    "WeightedDomainStream",
    "compute_update",
]
