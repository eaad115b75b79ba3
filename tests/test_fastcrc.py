"""TensorBoard's record checksums in C: the same values, and TensorBoard's reader still checks them."""

import numpy as np
import pytest
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.summary.writer import record_writer

from tb_attention import Writer, fastcrc, summary
from tests.conftest import random_attention

# TensorBoard's own pure-Python function, whatever has been installed since.
PURE_PYTHON = pywrap_tensorflow.crc32c


def pure_masked(data):
    x = PURE_PYTHON(data)
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_the_c_checksum_equals_tensorboards():
    assert fastcrc.install(), "google-crc32c's C extension is a dependency"
    rng = np.random.default_rng(0)
    for size in (0, 1, 8, 1000, 4099):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert fastcrc.masked_crc32c(data) == pure_masked(data)


def test_writing_uses_it_and_the_loader_installs_it_for_reading():
    import tb_attention.loader  # noqa: F401

    assert record_writer.masked_crc32c is fastcrc.masked_crc32c  # installed by tb_attention.summary
    fastcrc.install(writer=False, reader=True)  # as TBLoader.load does
    assert pywrap_tensorflow.masked_crc32c is fastcrc.masked_crc32c


def _records(path):
    reader = pywrap_tensorflow.PyRecordReader_New(str(path))
    count = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return count
        count += 1


def test_records_pass_tensorboards_check_and_a_corrupt_one_still_fails(tmp_path):
    fastcrc.install(writer=True, reader=True)
    writer = Writer(tmp_path)
    summary.attention(writer, "probe", random_attention(np.random.default_rng(1), 2, 3, 5), [f"t{i}" for i in range(5)], 7)
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    assert _records(path) >= 2  # the file version event and the summary
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the last record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(errors.DataLossError, match="crc32"):
        _records(path)
