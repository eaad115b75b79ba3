"""What a probe would log, packed for the dashboard outside TensorBoard: `Probe.to_html` and tb_attention.notebook."""

# One code path: whatever is shown is first written by our own writer into a temporary logdir,
# exactly as `probe.log` writes into a user's, then packed by serve/export.py from what TensorBoard
# reads back. The logdir is deleted once packed: the pack holds every answer in memory. The serving
# side is imported when a page is made, not with the probes: a training loop never loads it.

import json
import os
import tempfile

from tb_attention.storage import summary


def pack_written(write, *, run, title):
    """The Pack of what `write(writer)` writes, as run `run` of a temporary logdir."""
    from tb_attention.serve import export

    with tempfile.TemporaryDirectory(prefix="tb-attention-") as logdir:
        with summary.Writer(os.path.join(logdir, run)) as writer:
            write(writer)
        return export.pack_logdir(logdir, runs=[run], steps="all", title=title)


def probe_pack(probe, model, step=0, *, run=None, title=None):
    """The Pack of what `probe.log(writer, model, step)` writes (run: the model's class name by default)."""
    run = run or type(model).__name__
    return pack_written(lambda writer: probe.log(writer, model, step), run=run, title=title or f"{run}: {probe.name}")


def opening_params(probe, run, params=None):
    """The dashboard state a probe's page opens on: its run and tag, in the view that suits its kind."""
    return {"view": probe.DASHBOARD_VIEW, "run": run, "tag": probe.name, **(params or {})}


class ToHtml:
    """`to_html`, shared by every probe whose `log(writer, model, step)` writes one step of examples."""

    DASHBOARD_VIEW = "head"  # the view a page of this probe opens on (schema.VIEWS)

    def to_html(self, model, step=0, *, run=None, title=None, params=None, theme="light"):
        """One self-contained HTML file (bytes: write them with open(path, "wb")) of what `log` would write
        for `model` at `step`: the dashboard with its data embedded, opened from disk with no server and no
        network (tb-attention export's format). run: the run's name on the page (default: the model's
        class); params: the dashboard state it opens on (`view`, `layer`, `heads`, ...); theme: light or dark."""
        from tb_attention.serve import export

        run = run or type(model).__name__
        pack = probe_pack(self, model, step, run=run, title=title)
        return export.html_document(pack, opening_params(self, run, params), theme, "latin1")


def examples(pack, run, tag, step=0):
    """The /examples answer a pack holds for (run, tag, step): its "examples" list."""
    return json.loads(pack.body("examples", dict(run=run, tag=tag, step=step)))["examples"]
