"""Unlabeled pool subsampling (UPS) on the caller's side: the schedule and the score table.

The proxy is stateless, so the orchestrator keeps each candidate's last computed score and
sends it back with the next Select (`selectors.Subsampling`; `proxy.v1.Subsampling` on the
wire); the proxy then re-scores only the top `gamma` fraction plus a rank-tempered sample
(PLASM/UPS paper, Sec. 4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.engine.selectors import Subsampling
from proxal.runtime.errors import InvalidArgumentError


@dataclass(frozen=True)
class UpsSchedule:
    """UPS settings: keep the top `gamma` plus a tempered sample (temperature T).

    The whole pool is re-scored on the first `full_rounds` rounds and then on every
    `full_every`-th round after them (0: never again), so stale scores are refreshed: with
    the defaults, rounds 0, 1, 6, 11, ...
    """

    gamma: float = 0.1
    temperature: float = 0.01
    full_rounds: int = 2
    full_every: int = 5

    def validate(self) -> None:
        if not 0 < self.gamma <= 1:
            raise InvalidArgumentError(f"UPS gamma must be in (0, 1], got {self.gamma}")
        if not self.temperature > 0:
            raise InvalidArgumentError(f"UPS temperature must be > 0, got {self.temperature}")
        if self.full_rounds < 1 or self.full_every < 0:
            raise InvalidArgumentError(
                "UPS needs full_rounds >= 1 (the first round has no scores yet) and "
                f"full_every >= 0, got {self.full_rounds} and {self.full_every}"
            )

    def is_full(self, round_: int) -> bool:
        """Whether round `round_` (0-based) re-scores the whole pool."""
        if round_ < self.full_rounds:
            return True
        since = round_ - self.full_rounds + 1
        return self.full_every > 0 and since % self.full_every == 0


class ScoreTable:
    """The last score the proxy computed for each id: ids (n,) int64 -> scores (n,) float32."""

    def __init__(self) -> None:
        self._scores: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._scores)

    def update(self, ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]) -> None:
        """Record fresh scores (n,) for ids (n,), replacing older ones."""
        self._scores.update(zip(ids.tolist(), scores.tolist(), strict=True))

    def drop(self, ids: list[int] | npt.NDArray[np.int64]) -> None:
        """Forget ids that got labeled: they are no longer candidates."""
        for i in np.asarray(ids, dtype=np.int64).tolist():
            self._scores.pop(i, None)

    def subsampling(self, schedule: UpsSchedule) -> Subsampling:
        """The subsampling carrying every recorded score, ids ascending."""
        ids = np.fromiter(self._scores.keys(), dtype=np.int64, count=len(self._scores))
        scores = np.fromiter(self._scores.values(), dtype=np.float32, count=len(self._scores))
        order = np.argsort(ids)  # sorted ids make the proxy's own sort a linear pass
        ids, scores = ids[order], scores[order]
        return Subsampling(schedule.gamma, schedule.temperature, ids, scores)
