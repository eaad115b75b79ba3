"""The error a capture raises when a model's attention cannot be captured: the bottom of the capture layer."""


class CaptureError(RuntimeError):
    """The model's attention cannot be captured; the message says why and what to do."""
