"""A Hugging Face Trainer callback: the Trainer's TensorBoard logging plus an attention probe."""

import sys

from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import CallbackHandler

from tb_attention.integrations.schedule import Schedule, Scheduled
from tb_attention.storage import summary


class AttentionCallback(Scheduled, TensorBoardCallback):
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
        self.schedule = Schedule(probe, every_n_steps, monitor)
        self.log_on_evaluate = log_on_evaluate
        self._sibling = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._sibling = _sibling_tensorboard_callback(self, _calling_handler())
        if self._sibling is None:
            if self.tb_writer is not None and state.is_world_process_zero:
                summary.adopt_writer(self.tb_writer)  # a writer given on s3:// or gs://: write-once before its first record
            super().on_train_begin(args, state, control, **kwargs)

    def _init_summary_writer(self, args):
        super()._init_summary_writer(args)
        if self.tb_writer is not None:
            # On s3:// or gs:// the writer writes write-once parts from its first record (the Trainer's arguments,
            # written next): TensorBoard's own file layer would re-send the file at every flush, or on gs:// keep
            # only its last record.
            summary.adopt_writer(self.tb_writer)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._sibling is None:  # else the Trainer's own TensorBoardCallback logs the scalars
            super().on_log(args, state, control, logs=logs, **kwargs)

    @property
    def writer(self):
        return self._sibling.tb_writer if self._sibling is not None else self.tb_writer

    def _writer_of(self, state):
        return self.writer if state.is_world_process_zero else None  # rank 0 writes

    def _log_probe(self, state, model):
        if model is None or (state.is_world_process_zero and self.writer is None):
            return
        self.schedule.log_probe(self._writer_of(state), model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.schedule.log_monitor(self._writer_of(state), state.global_step)
        if self.schedule.probe_due(state.global_step):
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
