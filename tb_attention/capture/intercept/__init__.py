"""Sees every attention computation of a forward, whatever module computes it, without changing it."""

# How: four routes, each a thin wrapper that calls the model's own code with the model's own
# arguments and only READS what went in and came out, so outputs and gradients are bit for bit
# those of a forward without interception:
#   - Hugging Face AttentionInterface models: `AttentionInterface.get_interface` hands out a
#     wrapper around the function the model would have used (eager, sdpa, flash, flex, custom).
#     The model's `_attn_implementation` is never changed, so masks and code paths stay the same.
#   - bare `torch.nn.functional.scaled_dot_product_attention` calls (nanoGPT, Falcon's sdpa path).
#   - `nn.MultiheadAttention` (and `nn.TransformerEncoderLayer`'s fused fast path, which never
#     calls its MultiheadAttention): q and k recomputed from the in-projection.
#   - eager code outside AttentionInterface (BLOOM, DeBERTa-v2, eager Falcon): the
#     `torch.nn.functional.softmax` of a 4-D tensor inside a module whose class is an *Attention.
#   - FlexAttention called by the model's code: `flex_attention` wherever the model's code files
#     bound it, its score_mod and block mask evaluated densely.
# The routes nest: a call seen by one route (e.g. an HF eager function, which calls softmax) is
# not seen again by the routes inside it.
#
# Module names come from GLOBAL forward hooks (`register_module_forward_pre_hook`): per-module
# hooks would switch nn.TransformerEncoderLayer off its fast path and change its outputs.
# Threads: what is active lives in a context variable; the global patches and hooks are
# installed while any thread intercepts and pass straight through for everyone else.

from tb_attention.capture.intercept import flex, hf, mha, sdpa, softmax  # noqa: F401  the routes
from tb_attention.capture.intercept.call import AttentionCall
from tb_attention.capture.intercept.context import intercepting
from tb_attention.runtime.modules import unwrap  # the module that really runs (compiled, DDP...)

__all__ = ["AttentionCall", "intercepting", "unwrap"]
