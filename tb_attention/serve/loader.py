"""TensorBoard's entry point for the attention plugin (imports only tensorboard, numpy and the standard library)."""

# An ImportError in an entry-point module kills the whole `tensorboard` command, so this module
# and everything it imports at load time stay free of torch, transformers and spaCy.

import logging

from tensorboard.plugins import base_plugin

from tb_attention.storage import fastcrc, schema

logger = logging.getLogger(__name__)


class TBLoader(base_plugin.TBLoader):
    """Loads the attention plugin and makes TensorBoard keep every step of its data."""

    def fix_flags(self, flags):
        # TensorBoard keeps only 10 blobs per tag of an unknown plugin by default; 0 keeps all.
        # A user's own `--samples_per_plugin attention=N` still wins.
        samples = getattr(flags, "samples_per_plugin", None)
        if samples is None:
            samples = {}
            flags.samples_per_plugin = samples
        samples.setdefault(schema.PLUGIN_NAME, 0)

    def load(self, context):
        from tb_attention.serve.plugin import AttentionPlugin

        try:  # the Python loader checks each record in pure Python; never let this cost the tab
            fastcrc.install_reader()
        except Exception as e:  # noqa: BLE001
            logger.warning("tb-attention: keeping TensorBoard's own record checksum: %s", e)
        return AttentionPlugin(context)
