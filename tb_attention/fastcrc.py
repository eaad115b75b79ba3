"""TensorBoard's record checksums computed in C (google-crc32c) instead of pure Python.

TensorBoard writes and (without TensorFlow, with `--load_fast false`) reads every event record
with a CRC-32C computed one byte at a time in Python, about 0.2 s per MB: 1.1 s of a 1.35 s probe
step of 8 examples of 12 x 12 x 128 on the write side (torch's SummaryWriter uses the same
writer), and nearly all of the 90 s TensorBoard's Python loader took to read a 464 MiB logdir.
`install()` swaps that one function, where TensorBoard looks it up, for google-crc32c's C code:
the checksums, and so the files, are the same bytes. Imports only the standard library,
TensorBoard and (optionally) google_crc32c, so TensorBoard's entry point may use it.
"""

_MASK_DELTA = 0xA282EAD8
_crc32c = None  # google_crc32c.value, once install() found its C extension


def masked_crc32c(data):
    """TensorBoard's masked CRC-32C of a record (see tensorflow_stub.pywrap_tensorflow)."""
    x = _crc32c(data)
    return (((x >> 15) | (x << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def install(*, writer=True, reader=True):
    """Puts `masked_crc32c` into TensorBoard's record writer and/or its stub record reader.

    A no-op without google-crc32c's C extension (its pure-Python fallback is no faster).
    Returns whether the C checksum is in use.
    """
    global _crc32c
    if _crc32c is None:
        try:
            import google_crc32c
        except ImportError:
            return False
        if getattr(google_crc32c, "implementation", None) != "c":
            return False
        _crc32c = google_crc32c.value
    if writer:
        from tensorboard.summary.writer import record_writer

        record_writer.masked_crc32c = masked_crc32c
    if reader:
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

        pywrap_tensorflow.masked_crc32c = masked_crc32c
    return True
