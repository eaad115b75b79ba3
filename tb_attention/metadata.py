"""The storage format, in one import: the schema (schema.py) and the blob encodings (tb_attention/storage/codecs/)."""

# Kept so that `from tb_attention import metadata; metadata.X` keeps working everywhere; new code
# may import tb_attention.storage.schema or tb_attention.storage.codecs directly. Both are torch-free. Their public
# names are re-exported whole rather than listed a second time here.

from tb_attention.storage import schema
from tb_attention.storage.codecs import *  # noqa: F401,F403
from tb_attention.storage.schema import *  # noqa: F401,F403


def parse_manifest(blob):
    """The manifest of a step from its blob (bytes) or decoded; as before schema.parse_manifest took the decoded form."""
    return schema.parse_manifest(blob) if isinstance(blob, dict) else decode_manifest(blob)  # noqa: F405
