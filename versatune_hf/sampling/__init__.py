"""Drawing rows by domain: `WeightedDomainSampler` (map-style datasets) and `WeightedDomainStream` (iterable ones),
both driven by a schedule of `(draw position, weights)` entries so that every rank and every replay switches at the
same draw. They know nothing of the Trainer."""

from .sampler import WeightedDomainSampler
from .schedule import WeightSchedule
from .stream import WeightedDomainStream

__all__ = ["WeightSchedule", "WeightedDomainSampler", "WeightedDomainStream"]
