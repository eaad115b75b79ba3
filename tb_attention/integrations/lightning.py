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

from tb_attention.integrations.schedule import Schedule, Scheduled  # noqa: E402  (after the framework, whose absence it explains)
from tb_attention.storage import logdir, summary  # noqa: E402


class AttentionProbeCallback(Scheduled, Callback):
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
        self.schedule = Schedule(probe, every_n_steps, monitor)
        self.log_on_validation = log_on_validation
        self.get_model = get_model
        self._writer = writer
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

    def setup(self, trainer, pl_module, stage):
        # On s3:// or gs:// the logger's SummaryWriter writes write-once parts from its first record: Lightning logs
        # the hyperparameters before training starts, which on gs:// would leave only the last of them.
        if not trainer.is_global_zero:
            return
        if self._writer is not None:
            summary.adopt_writer(self._writer)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and logdir.is_url(logger.root_dir):
                summary.adopt_writer(logger.experiment)

    def _log_probe(self, trainer, pl_module):
        model = self.get_model(pl_module) if self.get_model is not None else pl_module
        self.schedule.log_probe(self.writer(trainer) if trainer.is_global_zero else None, model, trainer.global_step)

    def on_train_start(self, trainer, pl_module):
        self._monitored_step = trainer.global_step  # the step the first batches belong to, not yet done

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._monitored_step:  # gradient accumulation: no optimizer step since the last batch
            return
        self._monitored_step = step
        self.schedule.log_monitor(self.writer(trainer), step)
        if self.schedule.probe_due(step):
            self._log_probe(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module):
        if self.log_on_validation and not trainer.sanity_checking:
            self._log_probe(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        writer = self.writer(trainer) if trainer.is_global_zero else None
        if writer is not None and hasattr(writer, "flush"):
            writer.flush()
