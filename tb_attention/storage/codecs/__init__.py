"""Blob encodings of the storage format: gzip framing (blob), attention (quantised dense/causal/top-k), q/k, long.

Imports numpy and the standard library only (the TensorBoard backend uses it). The writer's encoders
also take torch tensors, recognised by duck typing: a tensor is quantised and reduced on its own
device and only the bytes to store are copied to the host. `encode_attention_layer` and
`encode_qk_layer` encode ONE layer, exactly as the whole-example encoders store it.
"""

from tb_attention.storage.codecs import long  # noqa: F401  (long.plan, long.encode_layer, long.decode_*)
from tb_attention.storage.codecs.attention import (  # noqa: F401
    DEFAULT_MAX_DENSE_TOKENS,
    DEFAULT_TOP_K,
    ENCODING_CAUSAL,
    ENCODING_DENSE,
    ENCODING_TOPK,
    MAX_QUANTIZATION_ERROR,
    MAX_TOKENS,
    QUANTIZATION,
    ROW_SUM_TOLERANCE,
    AttentionExample,
    EncodedLayer,
    RowSumError,
    attention_layer_blob,
    check_attention_blob,
    check_layer,
    choose_encoding,
    decode_attention,
    dequantize,
    encode_attention,
    encode_attention_layer,
    encode_attention_with_header,
    is_causal_layer,
    join_attention_layers,
    quantize,
    split_attention_layers,
)
from tb_attention.storage.codecs.blob import compress, decode_json, decode_manifest, decompress, encode_json  # noqa: F401
from tb_attention.storage.codecs.long import (  # noqa: F401
    DEFAULT_LONG_BUDGET,
    DEFAULT_LONG_TOKENS,
    DEFAULT_LONG_TOP_K,
    DEFAULT_SINK_TOKENS,
    MAX_LONG_TOKENS,
    ROW_CHUNK,
    UNUSED,
    EncodedLongLayer,
    LongLayer,
    LongPlan,
    LongRows,
)
from tb_attention.storage.codecs.qk import (  # noqa: F401
    QueryKey,
    check_qk_blob,
    decode_qk,
    encode_qk,
    encode_qk_layer,
    join_qk_layers,
    qk_layer_blob,
)
