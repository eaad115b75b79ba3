"""A Hugging Face Trainer callback: the Trainer's TensorBoard logging plus an attention probe."""

import sys

from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import CallbackHandler


class AttentionCallback(TensorBoardCallback):
    """Logs the Trainer's scalars and a probe every `every_n_steps` and at each evaluation.

    `Trainer(..., callbacks=[AttentionCallback(probe, every_n_steps=100)])` logs the scalars (as
    transformers' TensorBoardCallback does) and the probe into one event file. If the Trainer
    already reports to TensorBoard (report_to="tensorboard"), the probe goes through that
    callback's writer instead, so the run still has one event file (TensorBoard's Python loader
    reads only the newest event file of a directory).

    monitor: an optional training-health monitor (`tb_attention.probes.monitor.AttentionMonitor`, or any
    object with a `log(writer, step)` method), logged after every optimizer step on every rank
    (writer None on the ranks that do not write).
    """

    def __init__(self, probe, every_n_steps=100, *, log_on_evaluate=True, tb_writer=None, monitor=None):
        super().__init__(tb_writer=tb_writer)
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive number of steps, got {every_n_steps}")
        if monitor is not None and not callable(getattr(monitor, "log", None)):
            raise TypeError(f"monitor must have a log(writer, step) method, got {type(monitor).__name__}")
        self.monitor = monitor
        self.probe = probe
        self.every_n_steps = every_n_steps
        self.log_on_evaluate = log_on_evaluate
        self._sibling = None
        self._logged_steps = set()

    def on_train_begin(self, args, state, control, **kwargs):
        self._sibling = _sibling_tensorboard_callback(self, _calling_handler())
        if self._sibling is None:
            super().on_train_begin(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._sibling is None:  # else the Trainer's own TensorBoardCallback logs the scalars
            super().on_log(args, state, control, logs=logs, **kwargs)

    @property
    def writer(self):
        return self._sibling.tb_writer if self._sibling is not None else self.tb_writer

    def _log_probe(self, state, model):
        # One write per step: TensorBoard's Rust loader drops the records of a step written twice.
        if model is None or state.global_step in self._logged_steps:
            return
        if state.is_world_process_zero and self.writer is None:
            return
        # Every rank calls the probe: a sharded model's forward is a collective. Only rank 0 writes.
        self.probe.log(self.writer if state.is_world_process_zero else None, model, state.global_step)
        self._logged_steps.add(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.monitor is not None:
            self.monitor.log(self.writer if state.is_world_process_zero else None, state.global_step)
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self._log_probe(state, model)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if self.log_on_evaluate:
            self._log_probe(state, model)

    def on_train_end(self, args, state, control, **kwargs):
        if self._sibling is None:
            super().on_train_end(args, state, control, **kwargs)
        elif self.writer is not None:
            self.writer.flush()


def _calling_handler():
    """The Trainer's CallbackHandler calling the current event: the `self` of CallbackHandler.call_event.

    Events get no reference to the Trainer or its handler (only model, optimizer, dataloaders...);
    the handler is the caller of every event, a few frames up.
    """
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, CallbackHandler):
            return candidate
        frame = frame.f_back
    return None


def _sibling_tensorboard_callback(callback, handler):
    """The Trainer's own TensorBoardCallback (report_to="tensorboard"), if it has one besides `callback`."""
    for other in getattr(handler, "callbacks", ()):
        if other is not callback and type(other) is TensorBoardCallback:
            return other
    return None
