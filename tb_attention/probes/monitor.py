"""Attention health of the batches a model trains on: per-head max logit, entropy, null attention, sinks."""

# How: on a monitored step, a forward pre-hook on the model enters `intercept.intercepting` for
# the length of that forward (a forward hook leaves it), and each attention computation goes to
# `health.accumulate` in query chunks, under no_grad, from the detached q and k: the model computes
# exactly what it computes unmonitored. On other steps the hooks only test a flag.
#
# Steps: `log(writer, step)` after every optimizer step closes that step (it writes when
# step % every_n_steps == 0) and makes the next forwards belong to step + 1; `step(n)` before a
# forward says its step outright. Forwards under torch.no_grad (evaluation, a Probe) are not
# counted, nor the re-run forwards of activation checkpointing (they happen during backward,
# outside the model's forward). Several forwards of one step (gradient accumulation) are pooled:
# max of the max logits, means over all their real queries.

import contextlib
import inspect
import math
import warnings

from tb_attention.runtime import modules
from tb_attention.storage import summary

try:
    import torch
except ImportError:  # the writers and the plugin need no torch; monitoring does
    raise ImportError("the attention monitor needs PyTorch: install it first, e.g. `pip install torch`") from None

from tb_attention.capture import intercept
from tb_attention.metrics import health

DEFAULT_TAG = "attention_health"
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)  # torch < 2.3
# Float32 logits per query chunk (the batch's heads × chunk rows × keys). On a GPU larger chunks,
# because each chunk costs a dozen kernel launches; a few of these buffers are alive at once.
CHUNK_BYTES = {"cpu": 8 * 2**20, "accelerator": 128 * 2**20}


class AttentionMonitor:
    """Computes max_logit, attention_entropy, null_attention and max_weight per layer × head on training forwards.

        monitor = AttentionMonitor(model, every_n_steps=100)
        for step, batch in enumerate(batches):
            loss = model(**batch).loss; loss.backward(); optimizer.step(); optimizer.zero_grad()
            monitor.log(writer, step)   # every step: writes on monitored ones, costs nothing on others

    every_n_steps: steps `step % every_n_steps == 0` are monitored. tag: metrics go to
    `<tag>/<metric>`. chunk_size: query rows per chunk; None sizes chunks to CHUNK_BYTES of logits
    (8 MiB on a CPU, 128 MiB on an accelerator).
    Layers are the model's attention computations in the order of a forward (named by module).
    Under torch.distributed every rank must call `log`; the values are reduced over the ranks
    (max for max_logit, means over all ranks' queries for the others) and rank 0 writes.
    """

    def __init__(self, model, every_n_steps=1, tag=DEFAULT_TAG, *, chunk_size=None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"AttentionMonitor needs a torch.nn.Module, got {type(model).__name__}")
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive number of steps, got {every_n_steps!r}")
        if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive number of query rows or None, got {chunk_size!r}")
        if not tag or "/" in tag:
            raise ValueError(f"tag must be a non-empty name without '/', got {tag!r}")
        self.model = modules.unwrap(model)
        # A torch.compile'd model is hooked on its wrapper, outside what dynamo traces: a monitored
        # forward then runs eagerly (modules.eager), so nothing of the user's is recompiled.
        hooked = modules.compiled_wrapper(model)
        hooked = self.model if hooked is None else hooked
        if getattr(hooked, "_compiled_call_impl", None) is not None:
            warnings.warn(
                f"{type(hooked).__name__} was compiled whole in place (module.compile()): dynamo traces the "
                "monitor's hooks with it and recompiles on monitored steps. Monitor `torch.compile(model)` (the "
                "model you call) or compile its blocks instead",
                RuntimeWarning,
                stacklevel=2,
            )
        self.every_n_steps = int(every_n_steps)
        self.tag = tag
        self.chunk_size = chunk_size
        self.layer_names = []  # of the latest logged values, one per row
        self._next_step = None  # the step the coming forwards belong to (None: not known yet)
        self._written_step = None
        self._pending = {}  # (module name, occurrence) -> float64 [6, H] sums of this step's forwards
        self._active = None  # the open interception (and eager block) of the running forward
        self._depth = 0  # nested forwards of the model inside the monitored one
        self._occurrences = {}
        self._padding = None
        self._failed = None
        self._traced = False  # dynamo traced the hooks: the model was compiled around them
        self._handles = [
            hooked.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            hooked.register_forward_hook(self._after_forward, always_call=True),
        ]

    # -- steps ----------------------------------------------------------------------------------

    def step(self, step):
        """Declares the step of the coming forward(s); forgets values of forwards not yet logged."""
        self._next_step = summary.check_step(step)
        self._pending.clear()

    def is_monitored(self, step):
        """Whether `step` is one whose statistics are computed and written."""
        return summary.check_step(step) % self.every_n_steps == 0

    @property
    def listening(self):
        """Whether the next training forward is observed."""
        return self._failed is None and (self._next_step is None or self.is_monitored(self._next_step))

    def log(self, writer, step):
        """Writes the statistics of `step`'s forward(s) if `step` is monitored; returns them ({} if not).

        Call it after every optimizer step, on every rank (the ranks' values are reduced
        together); `writer` may be None on ranks other than 0. Returns {metric: float32 [L, H]}.
        """
        step = summary.check_step(step)
        pending, self._pending = self._pending, {}
        self._next_step = step + 1
        if not self.is_monitored(step) or step == self._written_step:
            return {}  # a step written twice would be dropped by TensorBoard's loader
        self._written_step = step
        sums = _stack(pending)
        sums = _reduce_over_ranks(sums)
        if sums is None or sums.shape[1] == 0:
            self._warn_empty(step)
            return {}
        self.layer_names = [name if k == 0 else f"{name}#{k}" for name, k in pending]
        values = {metric: array.cpu().numpy() for metric, array in health.finish(sums).items()}
        if summary.is_writing_rank():
            if writer is None:
                raise TypeError("monitor.log needs a writer on the writing rank (rank 0)")
            summary.metrics(writer, self.tag, values, step)
        return values

    def close(self):
        """Removes the monitor's hooks from the model."""
        self._exit()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- forwards ---------------------------------------------------------------------------------

    def _before_forward(self, module, args, kwargs):
        if _is_compiling():
            # Dynamo is tracing these hooks: the model was compiled around them (torch.compile of
            # the module inside, after the monitor was made). Monitoring in the trace would put the
            # step number in its guards (a recompile per step); it stays off and log() says why.
            self._traced = True
            return None
        if self._active is not None:
            self._depth += 1
            return None
        if not self.listening or not torch.is_grad_enabled():
            return None
        self._occurrences = {}
        self._padding = _padding_mask(self.model, args, kwargs)
        with contextlib.ExitStack() as context:  # kept open until the forward ends (_exit)
            context.enter_context(modules.eager())  # compiled code (whole model or blocks) runs as written
            context.enter_context(intercept.intercepting(self.model, self._listen))
            self._active = context.pop_all()
        return None

    def _after_forward(self, module, args, output):
        if self._depth:
            self._depth -= 1
        else:
            self._exit()
        return None

    def _exit(self):
        context, self._active = self._active, None
        if context is not None:
            context.__exit__(None, None, None)

    def _listen(self, call):
        if self._failed is not None:
            return
        try:
            self._measure(call)
        except Exception as e:  # a monitoring fault must not stop the training run
            self._failed = e
            warnings.warn(f"attention monitor stopped: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)

    def _measure(self, call):
        b, h, nq, nk = call.shape
        occurrence = self._occurrences.get(call.name, 0)
        self._occurrences[call.name] = occurrence + 1
        query_mask = key_mask = None
        padding = self._padding
        if padding is not None and not call.cross and padding.shape == (b, nk):
            key_mask, query_mask = padding, padding[:, nk - nq :]
        device = _device_of(call)
        budget = CHUNK_BYTES["cpu" if device.type == "cpu" else "accelerator"]
        rows = self.chunk_size or health.rows_per_chunk(b, h, nk, budget)
        sums = health.HeadSums(h, device)
        health.accumulate(sums, call.logits, call.shape, chunk_size=rows, sinks=call.sinks, query_mask=query_mask,
                          key_mask=key_mask, causal=call.causal)
        slot = (call.name, occurrence)
        new = sums.tensors()
        self._pending[slot] = new if slot not in self._pending else health.combine(self._pending[slot], new)

    def _warn_empty(self, step):
        reason = f" (it stopped after an error: {self._failed})" if self._failed is not None else ""
        if self._traced:
            reason = (" (the model was compiled around the monitor's hooks, so dynamo traced them: make the "
                      "monitor with the model you call, AttentionMonitor(torch.compile(model)), or compile blocks)")
        warnings.warn(
            f"attention monitor: no training forward was seen for step {step}{reason}. Call monitor.log(writer, "
            "step) after every step (it costs nothing on unmonitored ones) or monitor.step(step) before the "
            "step's forward; forwards under torch.no_grad are not monitored",
            RuntimeWarning,
            stacklevel=3,
        )


def _device_of(call):
    tensor = call.query if call.query is not None else call.logits(slice(0, 0))
    return tensor.device


def _padding_mask(module, args, kwargs):
    """The forward's [B, N] attention_mask (True = real token), when it has one of that form."""
    mask = kwargs.get("attention_mask")
    if mask is None and args:
        try:
            mask = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments.get("attention_mask")
        except (TypeError, ValueError):
            mask = None
    # Only 0/1 masks: a float [B, N] mask may be additive (0 / -inf), the opposite convention.
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and (mask.dtype == torch.bool or not mask.is_floating_point()):
        return mask != 0
    return None


def _stack(pending):
    """float64 [6, L, H] from per-layer [6, H] sums (fewer heads: padded with 'no query seen')."""
    if not pending:
        return None
    heads = max(t.shape[1] for t in pending.values())
    rows = []
    for t in pending.values():
        if t.shape[1] < heads:
            pad = torch.zeros(6, heads - t.shape[1], dtype=t.dtype, device=t.device)
            pad[0] = -math.inf
            t = torch.cat([t, pad], dim=1)
        rows.append(t)
    return torch.stack(rows, dim=1)


def _reduce_over_ranks(sums):
    """The sums of every rank (max of max logits, sums of the rest); None when no rank saw a forward."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sums
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    shape = (0, 0) if sums is None else tuple(sums.shape[1:])
    # One collective tells every rank whether all shapes agree (max of (L, H) equals minus max of (-L, -H)).
    shapes = torch.tensor([shape[0], shape[1], -shape[0], -shape[1]], device=device)
    dist.all_reduce(shapes, op=dist.ReduceOp.MAX)
    if shapes[0] != -shapes[2] or shapes[1] != -shapes[3]:
        raise RuntimeError(
            f"attention monitor: ranks saw different attention layouts (this rank {shape[0]} layers × {shape[1]} "
            "heads); every rank must run the same model and call monitor.log on the same steps"
        )
    if shape[0] == 0:
        return None
    sums = sums.to(device)
    top, rest = sums[:1].clone(), sums[1:].clone()
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    dist.all_reduce(rest, op=dist.ReduceOp.SUM)
    return torch.cat([top, rest])
