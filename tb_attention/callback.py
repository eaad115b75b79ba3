"""A Hugging Face Trainer callback: the Trainer's TensorBoard logging plus an attention probe."""

import gc

from transformers.integrations import TensorBoardCallback


class AttentionCallback(TensorBoardCallback):
    """Logs the Trainer's scalars and a probe every `every_n_steps` and at each evaluation.

    `Trainer(..., callbacks=[AttentionCallback(probe, every_n_steps=100)])` logs the scalars (as
    transformers' TensorBoardCallback does) and the probe into one event file. If the Trainer
    already reports to TensorBoard (report_to="tensorboard"), the probe goes through that
    callback's writer instead, so the run still has one event file (TensorBoard's Python loader
    reads only the newest event file of a directory).
    """

    def __init__(self, probe, every_n_steps=100, *, log_on_evaluate=True, tb_writer=None):
        super().__init__(tb_writer=tb_writer)
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive number of steps, got {every_n_steps}")
        self.probe = probe
        self.every_n_steps = every_n_steps
        self.log_on_evaluate = log_on_evaluate
        self._sibling = None
        self._logged_steps = set()

    def on_train_begin(self, args, state, control, **kwargs):
        self._sibling = _sibling_tensorboard_callback(self)
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
        if not state.is_world_process_zero or model is None or state.global_step in self._logged_steps:
            return
        if self.writer is None:
            return
        self.probe.log(self.writer, model, state.global_step)
        self._logged_steps.add(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
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


def _sibling_tensorboard_callback(callback):
    """The Trainer's own TensorBoardCallback, if it has one besides `callback`.

    Callbacks get no reference to the Trainer; the list that holds `callback` (the callback
    handler's) also holds its siblings, so we look for it among the objects referring to `callback`.
    """
    for holder in gc.get_referrers(callback):
        if isinstance(holder, list) and any(c is callback for c in holder):
            for other in holder:
                if other is not callback and type(other) is TensorBoardCallback:
                    return other
    return None
