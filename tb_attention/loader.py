"""TensorBoard's entry point for the attention plugin (imports only tensorboard, numpy and the standard library)."""

# An ImportError in an entry-point module kills the whole `tensorboard` command, so this module
# and everything it imports at load time stay free of torch, transformers and spaCy.

import ctypes
import os
import sys

from tensorboard.plugins import base_plugin

from tb_attention import fastcrc, metadata


class TBLoader(base_plugin.TBLoader):
    """Loads the attention plugin and makes TensorBoard keep every step of its data."""

    def fix_flags(self, flags):
        # TensorBoard keeps only 10 blobs per tag of an unknown plugin by default; 0 keeps all.
        # A user's own `--samples_per_plugin attention=N` still wins.
        samples = getattr(flags, "samples_per_plugin", None)
        if samples is None:
            samples = {}
            flags.samples_per_plugin = samples
        samples.setdefault(metadata.PLUGIN_NAME, 0)

    def load(self, context):
        from tb_attention.plugin import AttentionPlugin

        limit_malloc_arenas()
        fastcrc.install(writer=False, reader=True)  # the Python loader checks each record in pure Python
        return AttentionPlugin(context)


_M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas=MALLOC_ARENAS):
    """Caps glibc's malloc arenas in the TensorBoard process, unless MALLOC_ARENA_MAX is set.

    TensorBoard answers each request on its own thread, and glibc gives threads arenas of their
    own (up to 8 per core) that keep their freed memory: under 32 concurrent requests for
    attention blobs the Python process grew from 70 to 214 MiB, 0.3x the logdir on top of the
    data server's copy (BENCHMARKS.md). Two arenas keep that growth small; requests are serialised
    by Python's GIL anyway. Returns whether the cap was set.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt arenas)
        return False
