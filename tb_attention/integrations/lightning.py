"""A PyTorch Lightning callback: an attention probe (and a health monitor) into the TensorBoardLogger's event file."""

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback
        from pytorch_lightning.loggers import TensorBoardLogger
    except ImportError:
        raise ImportError(
            "tb_attention.integrations.lightning needs PyTorch Lightning: `pip install lightning`"
        ) from None


class AttentionProbeCallback(Callback):
    """Logs `probe` every `every_n_steps` optimizer steps (and after each validation) with the
    Trainer's TensorBoardLogger, so probe, metrics and Lightning's scalars share one event file.

        trainer = lightning.Trainer(logger=TensorBoardLogger("runs"), callbacks=[AttentionProbeCallback(probe)])

    get_model: which module to probe, get_model(lightning_module) (default: the LightningModule
        itself, called as the probe calls any module); e.g. `lambda m: m.model` for a LightningModule
        that wraps a Hugging Face model.
    monitor: an optional training-health monitor (`tb_attention.probes.monitor.AttentionMonitor`, or any
        object with a `log(writer, step)` method), logged after every optimizer step.
    writer: a SummaryWriter-like writer to use instead of the TensorBoardLogger's.
    Steps are the Trainer's global_step (optimizer steps done), as in Lightning's own scalars.
    """

    def __init__(self, probe, every_n_steps=100, *, log_on_validation=True, get_model=None, monitor=None, writer=None):
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive number of steps, got {every_n_steps}")
        if monitor is not None and not callable(getattr(monitor, "log", None)):
            raise TypeError(f"monitor must have a log(writer, step) method, got {type(monitor).__name__}")
        self.probe = probe
        self.every_n_steps = every_n_steps
        self.log_on_validation = log_on_validation
        self.get_model = get_model
        self.monitor = monitor
        self._writer = writer
        self._logged_steps = set()
        self._monitored_step = None

    def writer(self, trainer):
        """The writer the probe goes through: the one given, or the TensorBoardLogger's SummaryWriter."""
        if self._writer is not None:
            return self._writer
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        if not trainer.is_global_zero:
            return None
        raise RuntimeError(
            "AttentionProbeCallback needs a TensorBoardLogger among the Trainer's loggers "
            "(Trainer(logger=TensorBoardLogger(...))) or a writer=SummaryWriter(...)"
        )

    def _log_probe(self, trainer, pl_module):
        step = trainer.global_step
        # One write per step: TensorBoard's Rust loader drops the records of a step written twice.
        if step in self._logged_steps:
            return
        model = self.get_model(pl_module) if self.get_model is not None else pl_module
        # Every rank calls the probe: a sharded model's forward is a collective. Only rank 0 writes.
        self.probe.log(self.writer(trainer) if trainer.is_global_zero else None, model, step)
        self._logged_steps.add(step)

    def on_train_start(self, trainer, pl_module):
        self._monitored_step = trainer.global_step  # the step the first batches belong to, not yet done

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._monitored_step:  # gradient accumulation: no optimizer step since the last batch
            return
        self._monitored_step = step
        if self.monitor is not None:
            self.monitor.log(self.writer(trainer), step)
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._log_probe(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module):
        if self.log_on_validation and not trainer.sanity_checking:
            self._log_probe(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        writer = self.writer(trainer) if trainer.is_global_zero else None
        if writer is not None and hasattr(writer, "flush"):
            writer.flush()
