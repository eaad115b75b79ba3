"""Log directories, local or on object storage (s3://, gs://): which we write, and how they are joined, listed and replaced."""

# One rule for every writer and command of ours (Writer, summary.* through a user's writer, the
# CLI): `check_logdir` accepts a local path, or a URL of a scheme we write correctly through
# TensorBoard's own file layer, and refuses anything else before a byte is written. A URL is
# joined, listed and replaced as a URL (never as a local path, which would make a folder "s3:").
# Writing itself is storage/event_parts.py: object stores get each event record once.

import os
import posixpath
import re

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")

# What each scheme needs and how TensorBoard reads it (README, "Logdir on cloud storage").
SCHEMES = {
    "s3": {
        "module": "boto3",
        "install": "pip install boto3",
        "serve": "tensorboard's Python loader (--load_fast=false; the Rust data server reads local and gs:// only)",
    },
    "gs": {
        "module": "gcsfs",
        "install": "pip install gcsfs",
        "serve": "either loader (the Rust data server reads gs:// itself; --load_fast=false reads it through gcsfs)",
    },
}
EVENT_FILE_MARK = "tfevents"  # both loaders take a file whose name contains it as an event file


class LogdirError(ValueError):
    """A log directory we cannot write correctly: the message says why and what to do."""


def is_url(logdir):
    return _URL.match(str(logdir)) is not None


def scheme(logdir):
    match = _URL.match(str(logdir))
    return match.group(1).lower() if match else None


def check_logdir(logdir):
    """`logdir` as a string, or a LogdirError before anything is written.

    Local paths pass. A URL passes when its scheme is one we write correctly (s3://, gs://), it
    names a bucket, and the package TensorBoard's file layer needs for it is installed.
    """
    if logdir is None or str(logdir).strip() == "":
        raise LogdirError("the log directory is empty: give a local folder, or an s3:// or gs:// URL")
    text = os.fspath(logdir) if not isinstance(logdir, str) else logdir
    match = _URL.match(text)
    if match is None:
        return text
    name, rest = match.group(1).lower(), match.group(2)
    if name not in SCHEMES:
        hint = " (spell Google Cloud Storage gs://)" if name == "gcs" else ""
        hint = " (give the folder as a plain path)" if name == "file" else hint
        raise LogdirError(
            f"log directory {text!r}: the {name}:// scheme is not supported{hint}; tb-attention writes local folders, "
            "s3:// and gs:// (README, 'Logdir on cloud storage'). Other schemes are refused rather than written "
            "through a file layer that may re-send or overwrite event files"
        )
    if match.group(1) != name:
        raise LogdirError(f"log directory {text!r}: write the scheme in lower case ({name}://), as TensorBoard reads it")
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise LogdirError(f"log directory {text!r} names no bucket: write {name}://BUCKET/path")
    if not _has_module(SCHEMES[name]["module"]) and not (name == "gs" and _has_tensorflow()):
        raise LogdirError(
            f"log directory {text!r}: TensorBoard's file layer needs {SCHEMES[name]['module']} for {name}:// "
            f"({SCHEMES[name]['install']}, or pip install 'tb-attention[cloud]')"
        )
    return text.rstrip("/") if rest.rstrip("/") else text


def _has_module(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _has_tensorflow():
    from tensorboard.compat import tf

    return getattr(tf, "__name__", "") == "tensorflow"


def join(logdir, *names):
    """`logdir/name/...`: with / for a URL (whatever the local separator), os.path.join otherwise."""
    if is_url(logdir):
        return posixpath.join(str(logdir), *names)
    return os.path.join(os.fspath(logdir), *names)


def _gfile():
    from tensorboard.compat import tf

    return tf.io.gfile


def event_files(directory):
    """The event files directly inside `directory` (full paths or URLs), sorted; [] when there is none."""
    gfile = _gfile()
    try:
        if not gfile.isdir(directory):
            return []
        names = gfile.listdir(directory)
    except Exception as e:  # noqa: BLE001  (a store's own error: no bucket, no credentials, no endpoint)
        raise unreachable(directory, e) from None
    return sorted(join(directory, name.rstrip("/")) for name in names if EVENT_FILE_MARK in name.rstrip("/").rsplit("/", 1)[-1])


def unreachable(directory, error):
    """The LogdirError for a store that refused a listing or a write: what it said, and what to check."""
    name = scheme(directory)
    if name == "s3":
        where = f"S3_ENDPOINT={os.environ['S3_ENDPOINT']}" if os.environ.get("S3_ENDPOINT") else "AWS's endpoint (S3_ENDPOINT unset)"
        check = f"check that the bucket exists at {where} and the AWS_* credentials (or ~/.aws) allow it"
    elif name == "gs":
        where = (f"STORAGE_EMULATOR_HOST={os.environ['STORAGE_EMULATOR_HOST']}" if os.environ.get("STORAGE_EMULATOR_HOST")
                 else "Google Cloud Storage")
        check = f"check that the bucket exists at {where} and the Google credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud) allow it"
    else:
        check = "check the path"
    return LogdirError(f"{directory}: {type(error).__name__}: {error}; {check}")


def check_reachable(directory):
    """The event files in `directory`, listed so that a missing bucket or credentials fail before any work,
    not at the first upload."""
    files = event_files(directory)
    if scheme(directory) == "gs":  # gcsfs lists a missing bucket as empty
        bucket = "gs://" + directory[len("gs://"):].split("/", 1)[0]
        try:
            found = _gfile().isdir(bucket)
        except Exception as e:  # noqa: BLE001
            raise unreachable(directory, e) from None
        if not found:
            raise unreachable(directory, FileNotFoundError(f"no bucket {bucket}"))
    return files


def remove(paths):
    """Deletes files or objects (URLs through the store's own client: TensorBoard's file layer deletes nothing)."""
    for path in paths:
        name = scheme(path)
        if name is None:
            os.remove(path)
        elif name == "s3":
            import boto3

            bucket, _, key = path[len("s3://"):].partition("/")
            boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT")).delete_object(Bucket=bucket, Key=key)
        else:
            import fsspec

            fs, fs_path = fsspec.core.url_to_fs(path)
            fs.rm(fs_path)
            fs.invalidate_cache()


def new_run(logdir, run, overwrite=False):
    """The run directory `logdir/run` for a command that writes one run once (analyze, probe, export).

    Refuses a run that already has event files (TensorBoard would drop or hide records of a step
    written twice) unless `overwrite`, which deletes them first. A URL is checked (`check_logdir`)
    and listed before anything is computed, so a missing bucket fails in seconds.
    """
    logdir = check_logdir(logdir)
    if not run or run.strip("/") != run or run in (".", ".."):
        raise LogdirError(f"run name {run!r}: give a non-empty name without leading or trailing '/'")
    directory = join(logdir, run)
    existing = check_reachable(directory)
    if existing and not overwrite:
        raise LogdirError(
            f"run {run!r} already has event files in {directory}; choose another --run, or pass --overwrite"
        )
    try:
        remove(existing)
    except Exception as e:  # noqa: BLE001
        raise unreachable(directory, e) from None
    return directory
