"""When a training framework's callback logs: one rule for every integration."""

# The monitor logs after every optimizer step; the probe every `every_n_steps` steps and at each
# evaluation, at most once per step (TensorBoard's Rust loader drops the records of a step written
# twice). Every rank calls both, since a sharded model's forward is a collective; only rank 0 has a
# writer (the others pass None), so only rank 0 writes.


class Schedule:
    """The probe (and optional health monitor) of a framework callback, and when each logs."""

    def __init__(self, probe, every_n_steps, monitor=None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive number of steps, got {every_n_steps}")
        if monitor is not None and not callable(getattr(monitor, "log", None)):
            raise TypeError(f"monitor must have a log(writer, step) method, got {type(monitor).__name__}")
        self.probe = probe
        self.every_n_steps = every_n_steps
        self.monitor = monitor
        self._logged_steps = set()

    def log_monitor(self, writer, step):
        """The health monitor after optimizer step `step`, if there is one."""
        if self.monitor is not None:
            self.monitor.log(writer, step)

    def probe_due(self, step):
        """Whether the probe logs after optimizer step `step` (evaluations aside)."""
        return bool(self.every_n_steps) and step % self.every_n_steps == 0

    def log_probe(self, writer, model, step):
        """The probe at `step`, unless it was logged at this step already."""
        if step in self._logged_steps:
            return
        self.probe.log(writer, model, step)
        self._logged_steps.add(step)


class Scheduled:
    """A callback's probe, step interval and monitor, as its `schedule` holds them (one copy of each)."""

    schedule: Schedule

    @property
    def probe(self):
        return self.schedule.probe

    @property
    def every_n_steps(self):
        return self.schedule.every_n_steps

    @property
    def monitor(self):
        return self.schedule.monitor
