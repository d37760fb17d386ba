"""Packing audit: a share of packed items is also run alone, and the answers compared.

Packing saves tokens, but answers drift with batch size and position in the batch. The audit
re-runs a stable sample (`Settings.audit_share`) of packed items alone, gives the task the alone
answer (the reference), and records how well the packed answer agreed, per task type and batch
size. When the agreement of the largest batches in use falls below `audit_threshold` over at least
`audit_min_samples` audits, the task type's maximum batch size is halved: the new limit lives in
Redis, where the packer reads it, and the change is logged as an event that reports show.
"""

from __future__ import annotations

import hashlib


def audited(item_key: str, share: float) -> bool:
    """True when the item falls in the audited `share` (0–1) of packed items.

    The choice depends only on the item key, so every worker picks the same items and
    `batchwise plan` can predict what the audit costs.
    """
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(f"audit:{item_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
