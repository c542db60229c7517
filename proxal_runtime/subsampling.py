"""Unlabeled pool subsampling (UPS): which candidates to re-score this round.

Pure numpy, shared by the proxy (`proxal.proxy_service.selection.Subsampling`) and the
orchestrator's fine-tuned AL loop. Given each candidate's previous score, the top `gamma`
fraction is always kept and lower ranks are kept with a probability that decays with
temperature T (PLASM/UPS paper, Sec. 4.2).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from proxal.runtime.ranking import id_uniform

UPS_SALT = 0x5550_5300  # decorrelates UPS draws from random-strategy scores of the same seed
UPS_RANK_HORIZON = 17.0  # exp(-17) < 2^-24: ranks past gamma + 17 T are never kept


def sort_by_id(
    ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """ids (n,) ascending with their scores (n,): the form `ups_keep` takes."""
    order = np.argsort(ids, kind="stable")
    return ids[order], scores[order]


def ups_keep(
    ids: npt.NDArray[np.int64],
    previous_ids: npt.NDArray[np.int64],
    previous_scores: npt.NDArray[np.float32],
    gamma: float,
    temperature: float,
    seed: int,
) -> npt.NDArray[np.bool_]:
    """Which candidates ids (m,) to re-score: a (m,) bool mask, deterministic given seed.

    `previous_ids` (n,) must be unique and ascending (see `sort_by_id`), `previous_scores`
    (n,) finite, 0 < gamma <= 1 and temperature > 0 (callers validate). Ranks r in [0, 1]
    are taken over all previous scores (0 = highest, ties by id), so shards given the same
    previous scores agree. An id is kept with probability exp(-max(0, r - gamma) / T),
    taken as 0 past r = gamma + 17 T where it is below the draws' 2^-24 resolution; ids
    without a previous score are always kept. The draw for an id is a hash of (seed, id),
    so vary the seed from round to round.
    """
    n = len(previous_ids)
    # Past rank gamma + 17 T the keep probability is below 2^-24, the resolution of the
    # uniform draws, so only the top `cut` need ranks: partition, then sort just them.
    # Ranks stop at 1, and T >= 1 reaches them all (T is capped, so a huge T cannot overflow).
    horizon = min(1.0, gamma + UPS_RANK_HORIZON * min(temperature, 1.0))
    cut = min(n, math.ceil(horizon * n) + 1)
    top = np.argpartition(-previous_scores, cut - 1)[:cut] if cut < n else np.arange(n)
    top = top[np.lexsort((previous_ids[top], -previous_scores[top]))]
    rank = np.arange(cut) / max(n - 1, 1)
    keep_p = np.zeros(n)
    keep_p[top] = np.exp(-np.maximum(0.0, rank - gamma) / temperature)
    pos = np.minimum(np.searchsorted(previous_ids, ids), max(n - 1, 0))
    known = previous_ids[pos] == ids if n else np.zeros(len(ids), dtype=bool)
    p = np.ones(len(ids))
    p[known] = keep_p[pos[known]]
    return id_uniform(ids, seed ^ UPS_SALT) < p
