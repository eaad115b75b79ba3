"""TensorBoard's record checksums computed in C (google-crc32c) instead of pure Python.

TensorBoard writes and (without TensorFlow, with `--load_fast false`) reads every event record
with a CRC-32C computed one byte at a time in Python, about 0.2 s per MB: 1.1 s of a 1.35 s probe
step of 8 examples of 12 x 12 x 128 on the write side (torch's SummaryWriter uses the same
writer), and nearly all of the 90 s TensorBoard's Python loader took to read a 464 MiB logdir.
`install_writer()` / `install_reader()` swap that one function, where TensorBoard looks it up, for
google-crc32c's C code: the checksums, and so the files, are the same bytes. The swap is made
explicitly (summary.write before tb-attention's first write, the plugin's loader when TensorBoard
loads it), only after checking that TensorBoard still has the function there and that the C code
gives its value; otherwise TensorBoard keeps its own, with a warning. Imports only the standard
library, TensorBoard and (optionally) google_crc32c, so TensorBoard's entry point may use it.
"""

import importlib
import logging
import warnings

logger = logging.getLogger(__name__)

_MASK_DELTA = 0xA282EAD8
_PROBE = b"tb-attention checks the C checksum against TensorBoard's own"
# Where TensorBoard looks the function up: the writer's module and the stub reader's module.
WRITER_MODULE = "tensorboard.summary.writer.record_writer"
READER_MODULE = "tensorboard.compat.tensorflow_stub.pywrap_tensorflow"
_crc32c = None  # google_crc32c.value, once found
_installed = {}  # module name -> whether the C checksum is in place


def masked_crc32c(data):
    """TensorBoard's masked CRC-32C of a record (see tensorflow_stub.pywrap_tensorflow)."""
    x = _crc32c(data)
    return (((x >> 15) | (x << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _c_extension():
    global _crc32c
    if _crc32c is None:
        try:
            import google_crc32c
        except ImportError:
            return False
        if getattr(google_crc32c, "implementation", None) != "c":
            return False  # its pure-Python fallback is no faster than TensorBoard's
        _crc32c = google_crc32c.value
    return True


def _install(module_name):
    """Puts masked_crc32c into `module_name` if it is safe; returns whether the C checksum is in use."""
    if module_name in _installed:
        return _installed[module_name]
    if not _c_extension():
        return False
    try:
        module = importlib.import_module(module_name)
        theirs = module.masked_crc32c
        if theirs is not masked_crc32c and theirs(_PROBE) != masked_crc32c(_PROBE):
            raise ValueError("its checksum differs from google-crc32c's")
        module.masked_crc32c = masked_crc32c
        _installed[module_name] = True
    except Exception as e:  # TensorBoard moved or changed it: keep its own, never break
        message = (f"tb-attention: TensorBoard's record checksum not found as expected ({module_name}: "
                   f"{type(e).__name__}: {e}); keeping TensorBoard's pure-Python checksum (slower)")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning(message)
        _installed[module_name] = False
    return _installed[module_name]


def install_writer():
    """The C checksum for TensorBoard's record writer (tb-attention's writes and the user's own)."""
    return _install(WRITER_MODULE)


def install_reader():
    """The C checksum for TensorBoard's stub record reader (the Python loader)."""
    return _install(READER_MODULE)


def install(*, writer=True, reader=True):
    """Both, or either; returns whether the C checksum is in use for every one asked for."""
    done = [install_writer()] if writer else []
    done += [install_reader()] if reader else []
    return all(done)
