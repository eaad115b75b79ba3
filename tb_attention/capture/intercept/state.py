"""What is intercepting: one Interception per `intercepting` block, in a context variable per thread."""

import contextlib
import contextvars
import re
import threading

import torch

from tb_attention.capture.intercept.call import AttentionCall

_CROSS_NAME = re.compile(r"(cross|encoder_attn|encdec)", re.IGNORECASE)

INSTALL_LOCK = threading.Lock()  # held while the global patches and hooks change


class Interception:
    """One `intercepting` block: the model's module names, its listener, the running modules."""

    def __init__(self, model, listener):
        self.model = model
        self.listener = listener
        self.names = {}
        for name, module in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(module), name)
        self.stack = []  # [module, calls seen when it started]
        self.suppressed = 0  # > 0 while a route records a call itself (inner routes stay quiet)
        self.calls = 0
        # What a route derived from the attention mask the last call was given: the layers of a
        # forward share one mask, and checking it (is it causal? any bias?) reads the device.
        self.mask_memo = None
        # The last scores product (alpha · q @ kᵀ + beta · bias) an *Attention module computed with
        # Tensor.baddbmm (BLOOM): the softmax route's q, k and bias when its softmax reads it next.
        self.scores = None

    @contextlib.contextmanager
    def running(self):
        """The model counts as running for the block (its attention is seen, calls numbered from 0), as
        inside its forward: for code that runs its pieces without calling the model (a decoding step)."""
        self.calls = 0
        self.stack.append((self.model, 0))
        try:
            yield
        finally:
            self.stack.pop()

    def current_module(self):
        """The innermost running module, past wrappers that only run a piece of attention."""
        for module, _ in reversed(self.stack):
            if not isinstance(module, (torch.nn.Softmax, torch.nn.Dropout)):
                return module
        return None

    def emit(self, module, **fields):
        if torch._C._current_graph_task_id() != -1:
            return  # a forward recomputed during backward (activation checkpointing): seen already
        name = self.names.get(id(module), "") if module is not None else ""
        cross = fields.pop("cross", None)
        if cross is None:
            cross = bool(getattr(module, "is_cross_attention", False)) or bool(_CROSS_NAME.search(name))
        call = AttentionCall(name=name, index=self.calls, module=module, cross=cross, **fields)
        self.calls += 1
        self.suppressed += 1  # the listener's own tensor work must not be seen as attention
        try:
            self.listener(call)
        finally:
            self.suppressed -= 1


ACTIVE = contextvars.ContextVar("tb_attention_interceptions", default=())


def interception_for(module):
    for it in reversed(ACTIVE.get()):
        if id(module) in it.names:
            return it
    return None


def innermost_interception():
    """The interception whose model is running in this context (innermost first), unless it is
    suppressed; None when no intercepted model is running."""
    for it in reversed(ACTIVE.get()):
        if it.stack:
            return None if it.suppressed else it
    return None
