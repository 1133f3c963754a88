"""Fault injection shared by every simulator; vendors add their own switches in ``extra``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # uniform extra delay in [0, jitter]
    error_rate: float = 0.0  # fraction of requests answered with ``error_status``
    error_status: int = 500
    reset_rate: float = 0.0  # fraction of requests whose connection is dropped, no response
    truncate_rate: float = 0.0  # fraction of bodies cut short (Content-Length promises more)
    malformed_rate: float = 0.0  # fraction of JSON bodies replaced by invalid JSON
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def update(self, values: dict[str, Any], allowed_extra: frozenset[str]) -> None:
        """Apply a ``POST /_sandbox/faults`` body; unknown keys are an error, not ignored."""
        for key, value in values.items():
            if key == "extra":
                if not isinstance(value, dict):
                    raise ValueError("'extra' must be an object")
                unknown = set(value) - allowed_extra
                if unknown:
                    raise ValueError(f"unknown vendor fault(s): {sorted(unknown)}")
                self.extra.update(value)
            elif key in allowed_extra:
                self.extra[key] = value
            elif key in self.__dataclass_fields__ and not key.startswith("_"):
                setattr(self, key, value)
                if key == "seed":
                    self._rng.seed(value)
            else:
                raise ValueError(f"unknown fault {key!r}")

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def delay_s(self) -> float:
        extra = self._rng.uniform(0, self.latency_jitter_ms) if self.latency_jitter_ms else 0.0
        return (self.latency_ms + extra) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (dict(v) if isinstance(v, dict) else v)
            for k, v in self.__dict__.items()
            if not k.startswith("_")
        }
