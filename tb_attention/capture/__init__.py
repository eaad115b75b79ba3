"""Capture: the attention a forward computes, seen by interception (intercept/), recorded (record) or streamed
per layer (stream), never changing what the model computes."""

from tb_attention.capture.errors import CaptureError
from tb_attention.capture.record import (
    GROUPS,
    Captured,
    CapturedGroup,
    LayerScoring,
    RecordedCall,
    Recorder,
    accepts,
    capture_attention,
    eval_mode,
    is_hf,
    recording,
)

__all__ = [
    "GROUPS", "CaptureError", "Captured", "CapturedGroup", "LayerScoring", "RecordedCall", "Recorder", "accepts",
    "capture_attention", "eval_mode", "is_hf", "recording",
]
