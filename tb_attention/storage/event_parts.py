"""Event files on object storage written once: each flush uploads the records since the last as a new part, whole."""

# Why: an object store has no append. TensorBoard's file layer (without TensorFlow) re-uploads the
# whole event file on every flush to s3:// (quadratic in the run's length) and, for gs://, lets
# gcsfs turn each append into an overwrite (all but the last record lost). Here the records of one
# flush become one object, `<event file name>.<part number>`, uploaded once and never touched again:
#   - each part is a complete event file (it starts with the file_version event), so both of
#     TensorBoard's loaders read it; names sort in the order written, so the Python loader, which
#     reads a directory's event files in name order, and the Rust one, which reads every file, see
#     each step once and in order;
#   - one writer per run directory still holds: the parts are one event file cut in pieces, and a
#     user's SummaryWriter is made to write its own records this way (`adopt`), not beside ours.

import atexit
import io
import os
import socket
import threading
import time
import weakref

from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from tb_attention.storage import logdir as logdirs

MAX_PART_BYTES = 64 * 2**20  # bytes of records held in memory before they go up as a part without a flush
PART_DIGITS = 8  # part numbers are zero-padded so that names sort in the order written
_counter = iter(range(10**9))
_counter_lock = threading.Lock()


def _event_file_name(filename_suffix=""):
    """A name as TensorBoard's EventFileWriter gives (time, host, pid, a process-wide counter)."""
    with _counter_lock:
        n = next(_counter)
    return f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{n}{filename_suffix}"


def part_name(base, number):
    return f"{base}.{number:0{PART_DIGITS}d}"


class PartEventWriter:
    """An EventFileWriter for object stores (same methods): records wait in memory and each `flush`
    (also every `flush_secs`, at `close`, at exit, and when MAX_PART_BYTES gather) uploads them as
    the next part through TensorBoard's file layer. A failed upload keeps its records for the next
    flush and raises; nothing is dropped.

    base_name: the event file's name (default: a new one as TensorBoard names them); parts are
    `<base_name>.00000001`, `.00000002`, ...
    """

    def __init__(self, logdir, flush_secs=120, filename_suffix="", *, base_name=None, max_part_bytes=MAX_PART_BYTES):
        self._logdir = logdirs.check_logdir(logdir)
        if not logdirs.is_url(self._logdir):
            raise logdirs.LogdirError(f"{logdir!r} is a local path: write it with TensorBoard's EventFileWriter")
        self._base = base_name or _event_file_name(filename_suffix)
        self._flush_secs = float(flush_secs)
        self._max_part_bytes = int(max_part_bytes)
        self._lock = threading.RLock()
        self._buffer = io.BytesIO()
        self._records = RecordWriter(self._buffer)
        self._pending = 0  # records in the buffer, the file_version event not counted
        self._next_part = 1
        self._closed = False
        self.uploaded_bytes = 0  # sum of the parts' sizes: what this writer sent
        self._start_part()
        self._stop = threading.Event()
        if self._flush_secs > 0:
            self._thread = threading.Thread(target=_flush_every, args=(weakref.ref(self), self._stop, self._flush_secs),
                                            name="tb-attention-part-flush", daemon=True)
            self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def base_name(self):
        return self._base

    def get_logdir(self):
        return self._logdir

    def _start_part(self):
        event = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2",
                                source_metadata=event_pb2.SourceMetadata(writer="tb_attention.storage.event_parts"))
        self._records.write(event.SerializeToString())

    def add_event(self, event):
        if not isinstance(event, event_pb2.Event):
            raise TypeError(f"expected an event_pb2.Event, got {type(event).__name__}")
        data = event.SerializeToString()
        with self._lock:
            if self._closed:
                raise OSError("the event writer is closed")
            self._records.write(data)
            self._pending += 1
            if self._buffer.tell() >= self._max_part_bytes:
                self._upload()

    def flush(self):
        with self._lock:
            self._upload()

    def _upload(self):
        if not self._pending:
            return
        data = self._buffer.getvalue()
        path = logdirs.join(self._logdir, part_name(self._base, self._next_part))
        _write_object(path, data)  # raises with the records still buffered: the next flush retries
        self.uploaded_bytes += len(data)
        self._next_part += 1
        self._buffer = io.BytesIO()
        self._records = RecordWriter(self._buffer)
        self._pending = 0
        self._start_part()

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._upload()
            self._closed = True
        self._stop.set()

    def reopen(self):
        with self._lock:
            self._closed = False


def _write_object(path, data):
    """One object, written whole by TensorBoard's file layer (one upload: S3 PUT, GCS upload)."""
    from tensorboard.compat import tf

    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


def _flush_every(ref, stop, seconds):
    while not stop.wait(seconds):
        writer = ref()
        if writer is None:
            return
        try:
            writer.flush()
        except Exception as e:  # noqa: BLE001  (kept for the next flush, which raises to the caller)
            import logging

            logging.getLogger(__name__).warning("tb-attention: upload of an event part failed, kept for the next flush: %s", e)
        del writer


def _close_at_exit(ref):
    writer = ref()
    if writer is not None:
        writer.close()


# ---------------------------------------------------------------------------------------------
# A user's SummaryWriter (torch.utils.tensorboard, or anything whose file writer holds a TensorBoard
# EventFileWriter as `event_writer`) on a URL logdir


def adopt(file_writer):
    """Makes `file_writer` (a SummaryWriter's `_get_file_writer()`) write write-once parts when its
    logdir is a URL: its event file is flushed and closed, checked to hold every record written so
    far, and its later records go to parts named after it. No-op for a local logdir or when done.

    Raises LogdirError when the logdir is a URL we do not write, when the writer is of a kind whose
    event file we cannot find, or when its event file already lost records (gs:// without
    TensorFlow: gcsfs turns each append into an overwrite).
    """
    events = getattr(file_writer, "event_writer", None)
    if events is None or isinstance(events, PartEventWriter) or not hasattr(events, "get_logdir"):
        return
    directory = str(events.get_logdir())
    if not logdirs.is_url(directory):
        return
    logdirs.check_logdir(directory)
    path = getattr(events, "_file_name", None)
    if path is None:
        raise logdirs.LogdirError(
            f"the SummaryWriter on {directory} is of a kind ({type(events).__module__}) whose event file tb-attention "
            "cannot make write-once, and object stores have no append; log through tb_attention.Writer(logdir) "
            "instead (it has add_scalar and add_summary)"
        )
    try:
        events.flush()
        events.close()
        records = _records_in(path)
    except Exception as e:  # noqa: BLE001  (the store's own error: no bucket, no credentials)
        raise logdirs.unreachable(directory, e) from None
    if not records or not event_pb2.Event.FromString(records[0]).file_version:
        raise logdirs.LogdirError(
            f"the SummaryWriter's event file {path} has already lost records: without TensorFlow, TensorBoard's file "
            f"layer appends to {logdirs.scheme(directory)}:// by overwriting, so only its last record is left. "
            "Call tb_attention.summary.adopt_writer(writer) right after creating the SummaryWriter, before writing "
            "to it (it then writes write-once parts), or use tb_attention.Writer(logdir), which writes object stores "
            "itself (add_scalar, add_summary)"
        )
    flush_secs = getattr(getattr(events, "_async_writer", None), "_worker", None)
    flush_secs = getattr(flush_secs, "_flush_secs", 120)
    file_writer.event_writer = PartEventWriter(directory, flush_secs, base_name=posix_basename(path))


def posix_basename(path):
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _records_in(path):
    """The records of an event file, read whole (bytes of each record's data)."""
    from tensorboard.compat import tf
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    if not tf.io.gfile.exists(path):
        return []
    reader = PyRecordReader_New(path)
    out = []
    while True:
        try:
            reader.GetNext()
        except Exception:  # noqa: BLE001  (end of file, or a truncated record)
            return out
        out.append(reader.record())
