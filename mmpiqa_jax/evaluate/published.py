"""Published figures of LIQE and MP-IQE (`PUBLISHED`, copied from the papers), shown as reference
rows; `paper_dataset` maps our dataset names onto the papers' columns (`PAPER_DATASETS`).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

# The six datasets of LIQE's table, in its column order.
PAPER_DATASETS = ("LIVE", "CSIQ", "KADID-10k", "BID", "CLIVE", "KonIQ-10k")

# Our dataset names (file-safe builder names), squashed to lower-case letters and digits, -> the
# column name. A name also maps when it continues with a builder config (`koniq10k_512x384`).
_CANONICAL = {
    "liveiqa": "LIVE", "csiq": "CSIQ", "kadid10k": "KADID-10k", "bid": "BID",
    "livechallenge": "CLIVE", "koniq10k": "KonIQ-10k", "tid2013": "TID2013", "spaq": "SPAQ",
}
# Short names (as in `data.batch_sizes`, or the papers'): they map only when they are the whole
# name, so that e.g. `live_vqc` is not taken for LIVE.
_ALIASES = {"live": "LIVE", "liverelease2": "LIVE", "kadid": "KADID-10k", "clive": "CLIVE",
            "livec": "CLIVE", "koniq": "KonIQ-10k"}


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def paper_dataset(name: str) -> str:
    """The papers' column name of one of our dataset names (`live_challenge` -> CLIVE,
    `koniq10k_512x384` -> KonIQ-10k); an unknown name is returned as is."""
    text = str(name)
    if _squash(text) in _ALIASES:
        return _ALIASES[_squash(text)]
    tokens = [t for t in re.split(r"[\s_/:-]+", text) if t]
    for k in range(len(tokens), 0, -1):  # longest known prefix: `live_challenge` before `live`
        key = _squash("".join(tokens[:k]))
        if key in _CANONICAL:
            return _CANONICAL[key]
    return text


@dataclasses.dataclass(frozen=True)
class PublishedResult:
    """One published row: `results` maps a `PAPER_DATASETS` name to (SRCC, PLCC or None), absent
    where the source reports none; `statistic`: what the source says its figures are over the
    splits ("median", "mean"), or "unstated"."""
    method: str
    source: str
    statistic: str
    results: Mapping[str, tuple[float, float | None]]
    note: str = ""

    def to_json(self) -> dict:
        return {"method": self.method, "source": self.source, "statistic": self.statistic,
                "note": self.note, "published": True,
                "results": {d: {"srcc": s, "plcc": p} for d, (s, p) in self.results.items()}}


LIQE_PAPER = PublishedResult(
    method="LIQE",
    source="Zhang et al., CVPR 2023 (LIQE), SRCC / PLCC per dataset; unconfirmed here "
           "(figures as docs/method.md records them)",
    statistic="unstated",
    results={"LIVE": (0.970, 0.951), "CSIQ": (0.936, 0.939), "KADID-10k": (0.930, 0.931),
             "BID": (0.875, 0.900), "CLIVE": (0.904, 0.910), "KonIQ-10k": (0.919, 0.908)},
)

MPIQE_PAPER = PublishedResult(
    method="MP-IQE",
    source="Pan et al., 2024 (MP-IQE), SRCC: CSIQ and KADID-10k as the paper states, "
           "KonIQ-10k from a third-party table (as docs/method.md records them); PLCC not stated",
    statistic="unstated",
    results={"CSIQ": (0.961, None), "KADID-10k": (0.941, None), "KonIQ-10k": (0.898, None)},
    note="LIVE, BID and CLIVE not stated",
)

PUBLISHED = (LIQE_PAPER, MPIQE_PAPER)
