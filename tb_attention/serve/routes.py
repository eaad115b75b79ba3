"""Request parsing and error answers shared by the plugin's routes: JSON 4xx, never 500."""

# A route handler raises HttpError (or NotFound, FormatError, TensorBoard's PublicError) and `route`
# turns it into `{"error": ...}` through `http_util.Respond` (which adds nosniff): 400 for a malformed
# or missing parameter, 404 for what does not exist, 422 for stored data this version cannot read.

import logging
import mimetypes
import pathlib
import re

import numpy as np
import werkzeug.wrappers
from tensorboard import errors as tb_errors
from tensorboard.backend import http_util

from tb_attention.serve.reader import NotFound
from tb_attention.storage import schema

logger = logging.getLogger(__name__)

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
JSON = "application/json"
_INT_PATTERN = re.compile(r"[0-9]{1,19}")  # non-negative base-10 integer (< 2**63: an event's int64 step)
_INT_LIMIT = 2**63
_RANGE_PATTERN = re.compile(r"([0-9]{1,19}):([0-9]{1,19})")  # a half-open range A:B


class HttpError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def bad_request(message):
    return HttpError(400, message)


def not_found(message):
    return HttpError(404, message)


def route(handler):
    """Wraps a handler(self, request) so that every failure answers JSON 4xx, never 500."""

    @werkzeug.wrappers.Request.application
    def wrapper(self, request):
        try:
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, f"{request.method} is not allowed; use GET")
            return handler(self, request)
        except HttpError as e:
            return error(request, e.code, str(e))
        except NotFound as e:
            return error(request, 404, str(e))
        except schema.FormatError as e:
            return error(request, 422, f"cannot read stored data: {e}")
        except tb_errors.PublicError as e:
            return error(request, e.http_code if 400 <= e.http_code < 500 else 422, str(e))
        except Exception as e:  # a bug or a provider failure: say so, keep TensorBoard serving
            logger.exception("attention plugin: %s %s failed", request.path, request.query_string)
            return error(request, 422, f"cannot serve this request: {type(e).__name__}: {e}")

    wrapper.__name__ = handler.__name__
    return wrapper


def error(request, code, message):
    headers = [("Allow", "GET, HEAD")] if code == 405 else None  # a 405 must say what is allowed
    return http_util.Respond(request, {"error": message}, JSON, code=code, headers=headers)


def param(request, name, required=True):
    value = request.args.get(name)
    if value is None and required:
        raise bad_request(f"missing parameter {name!r}")
    return value


def int_param(request, name, required=True):
    value = param(request, name, required)
    if value is None:
        return None
    if not _INT_PATTERN.fullmatch(value) or int(value) >= _INT_LIMIT:
        raise bad_request(f"parameter {name!r} must be a non-negative integer, got {value!r}")
    return int(value)


def range_param(request, name, required=True):
    """A half-open range `A:B` (non-negative integers, A < B) as (A, B), or None when absent and optional."""
    value = param(request, name, required)
    if value is None:
        return None
    match = _RANGE_PATTERN.fullmatch(value)
    if not match or int(match[1]) >= int(match[2]) or int(match[2]) >= _INT_LIMIT:
        raise bad_request(f"parameter {name!r} must be a range A:B of non-negative integers with A < B, got {value!r}")
    return int(match[1]), int(match[2])


def json_floats(array):
    """Nested lists with NaN/inf as null (JSON has no NaN)."""
    array = np.asarray(array, dtype=np.float64)
    if np.all(np.isfinite(array)):
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()




def static_file(request, relative):
    """A file of the dashboard bundle (tb_attention/serve/static/), or 404: nothing outside it is served."""
    parts = relative.split("/")
    if not relative or "\\" in relative or "\0" in relative or any(p in ("", ".", "..") for p in parts):
        raise not_found(f"no static file {relative!r}")
    try:
        path = (STATIC_DIR / relative).resolve()
        if STATIC_DIR not in path.parents or not path.is_file():
            raise not_found(f"no static file {relative!r}")
        content = path.read_bytes()
    except OSError:  # e.g. a name too long for the file system
        raise not_found(f"no static file {relative!r}") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix in (".js", ".mjs"):
        content_type = "text/javascript"
    return http_util.Respond(request, content, content_type)
