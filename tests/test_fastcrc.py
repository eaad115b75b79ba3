"""TensorBoard's record checksums in C: the same values, and TensorBoard's reader still checks them."""

import numpy as np
import pytest
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.summary.writer import record_writer

from tb_attention import Writer
from tb_attention.storage import fastcrc, summary
from tests.support.data import random_attention

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


def test_writing_installs_it_and_the_loader_installs_it_for_reading(tmp_path):
    from tb_attention.serve.loader import TBLoader
    from tests.support.tensorboard import python_provider

    with Writer(tmp_path) as writer:
        summary.metrics(writer, "probe", {"entropy": np.zeros((1, 1))}, 0)
    assert record_writer.masked_crc32c is fastcrc.masked_crc32c  # installed by summary.write
    TBLoader().load(_Context(python_provider(tmp_path)))
    assert pywrap_tensorflow.masked_crc32c is fastcrc.masked_crc32c


class _Context:
    def __init__(self, provider):
        self.data_provider = provider


def _fresh(monkeypatch):
    monkeypatch.setattr(fastcrc, "_installed", {})


def test_a_tensorboard_without_the_function_keeps_its_own_checksum_with_a_warning(tmp_path, monkeypatch):
    import types

    _fresh(monkeypatch)
    moved = types.ModuleType(fastcrc.WRITER_MODULE)  # as if TensorBoard had moved masked_crc32c elsewhere
    monkeypatch.setitem(__import__("sys").modules, fastcrc.WRITER_MODULE, moved)
    with pytest.warns(RuntimeWarning, match="keeping TensorBoard's pure-Python checksum"):
        assert fastcrc.install_writer() is False
    assert not hasattr(moved, "masked_crc32c")
    with Writer(tmp_path) as writer:  # writing still works: TensorBoard's own writer, its own checksum
        summary.metrics(writer, "probe", {"entropy": np.zeros((1, 1))}, 0)


def test_a_tensorboard_whose_checksum_differs_is_left_alone(monkeypatch):
    _fresh(monkeypatch)
    monkeypatch.setattr(pywrap_tensorflow, "masked_crc32c", lambda data: 0)
    with pytest.warns(RuntimeWarning, match="differs"):
        assert fastcrc.install_reader() is False
    assert pywrap_tensorflow.masked_crc32c(b"x") == 0


def test_the_loader_still_loads_the_plugin_when_the_reader_internals_are_gone(tmp_path, monkeypatch):
    import sys

    from tb_attention.serve.loader import TBLoader
    from tb_attention.serve.plugin import AttentionPlugin
    from tests.support.tensorboard import python_provider

    _fresh(monkeypatch)
    monkeypatch.setitem(sys.modules, fastcrc.READER_MODULE, None)  # import raises ImportError
    with pytest.warns(RuntimeWarning):
        plugin = TBLoader().load(_Context(python_provider(tmp_path)))
    assert isinstance(plugin, AttentionPlugin)


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
