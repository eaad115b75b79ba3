"""Metrics: pure, vectorised maths on attention tensors — per-head statistics of Vig & Belinkov 2019 (attention),
cross attention (cross), training health (health), images (image, rollout). No I/O."""

from tb_attention.metrics.attention import (
    DEPENDENCY_DIRECTIONS,
    NULL_ENTROPY_THRESHOLD,
    VARIABILITY_TOKENS,
    AttentionStats,
    Exemplar,
    compute_metrics,
    pad_attention,
)

__all__ = [
    "DEPENDENCY_DIRECTIONS", "NULL_ENTROPY_THRESHOLD", "VARIABILITY_TOKENS", "AttentionStats", "Exemplar",
    "compute_metrics", "pad_attention",
]
