"""Where a model runs, and host tensors moved there without making the host wait for it."""

import torch


def device_of(model):
    """The device of the model's first parameter (the CPU for a module without any)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def to_device(tensor, device):
    """A host tensor on `device`, its copy queued behind the device's work instead of waiting for it.

    `.to("cuda")` of ordinary (pageable) host memory synchronises: the host waits until every
    kernel queued before the copy has run, so the GPU idles while the host prepares what comes
    next. A copy from pinned memory is queued like a kernel (`non_blocking`); PyTorch's pinned
    memory pool keeps the block until that copy has been done.
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
