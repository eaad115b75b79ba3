"""Tiny random-weight models of every kind tb-attention captures, and their reference attention.

Each reference is independent of tb_attention: the model's own eager `output_attentions`, the
weights nn.MultiheadAttention returns itself, or a softmax recomputed by hand.
"""

import copy

import torch
import torch.nn.functional as F
import transformers

VOCAB = 100


class NanoBlock(torch.nn.Module):
    """A nanoGPT-style block on F.scaled_dot_product_attention; keeps its q and k for the reference."""

    def __init__(self, dim=32, heads=4, kv_heads=4, mask="causal", scale=None):
        super().__init__()
        self.heads, self.kv_heads, self.mask, self.scale = heads, kv_heads, mask, scale
        self.head_dim = dim // heads
        self.ln = torch.nn.LayerNorm(dim)
        self.q = torch.nn.Linear(dim, dim)
        self.kv = torch.nn.Linear(dim, 2 * kv_heads * self.head_dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))
        self.last = None

    def forward(self, x):
        b, n, _ = x.shape
        h = self.ln(x)
        q = self.q(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(h).view(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask, is_causal = _nano_mask(self.mask, n, x.device)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale, enable_gqa=self.kv_heads != self.heads
        )
        self.last = (q.detach(), k.detach(), mask, is_causal)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, -1))
        return x + self.mlp(x)

    def reference(self):
        """softmax(scale·q·kᵀ + mask), by hand, in float64: [B, H, N, N]."""
        q, k, mask, is_causal = self.last
        k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
        scale = self.scale if self.scale is not None else self.head_dim**-0.5
        logits = (q.double() @ k.double().transpose(-1, -2)) * scale
        n = q.shape[2]
        if is_causal:
            logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.double()
        return logits.softmax(-1).float()


def _nano_mask(kind, n, device):
    i, j = torch.arange(n, device=device)[:, None], torch.arange(n, device=device)[None, :]
    if kind == "causal":
        return None, True
    if kind == "bool":  # causal, within a window of 3
        return (j <= i) & (i - j < 3), False
    if kind == "additive":  # causal with a distance penalty (ALiBi-like)
        return torch.where(j <= i, -0.5 * (i - j).float(), torch.tensor(float("-inf"))), False
    return None, False


class NanoGPT(torch.nn.Module):
    """Embeddings, `blocks`, a head: called as model(input_ids)."""

    def __init__(self, layers=2, dim=32, heads=4, kv_heads=4, mask="causal", scale=None, vocab=VOCAB):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, dim)
        self.wpe = torch.nn.Embedding(64, dim)
        self.blocks = torch.nn.ModuleList(NanoBlock(dim, heads, kv_heads, mask, scale) for _ in range(layers))
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, input_ids):
        x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def reference(self):
        return [block.reference() for block in self.blocks]


class MHAStack(torch.nn.Module):
    """Embeddings and a stack of nn.MultiheadAttention with residuals (sequence-first, like older code)."""

    def __init__(self, layers=2, dim=32, heads=4, causal=True):
        super().__init__()
        self.causal = causal
        self.emb = torch.nn.Embedding(VOCAB, dim)
        self.attn = torch.nn.ModuleList(torch.nn.MultiheadAttention(dim, heads) for _ in range(layers))

    def _mask(self, n):
        return torch.ones(n, n, dtype=torch.bool).triu(1) if self.causal else None

    def forward(self, input_ids, key_padding_mask=None):
        x = self.emb(input_ids).transpose(0, 1)  # [N, B, E]
        for attn in self.attn:
            mask = self._mask(x.shape[0])
            x = x + attn(x, x, x, attn_mask=mask, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x.transpose(0, 1)

    def reference(self, input_ids):
        out = []
        with torch.no_grad():
            x = self.emb(input_ids).transpose(0, 1)
            for attn in self.attn:
                y, w = attn(x, x, x, attn_mask=self._mask(x.shape[0]), need_weights=True, average_attn_weights=False)
                out.append(w)
                x = x + y
        return out


class Encoder(torch.nn.Module):
    """nn.TransformerEncoder over embeddings (batch first: its fused fast path runs in eval without grad)."""

    def __init__(self, layers=2, dim=32, heads=4, norm_first=False):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, dim)
        layer = torch.nn.TransformerEncoderLayer(dim, heads, 64, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, input_ids):
        return self.encoder(self.emb(input_ids))

    def reference(self, input_ids):
        out = []
        with torch.no_grad():
            x = self.emb(input_ids)
            for layer in self.encoder.layers:
                h = layer.norm1(x) if layer.norm_first else x
                out.append(layer.self_attn(h, h, h, need_weights=True, average_attn_weights=False)[1])
                x = layer(x)
        return out


def hf_model(family, attn_implementation="eager"):
    """A 2-layer random Hugging Face model of `family`, loaded with `attn_implementation`."""
    small = dict(vocab_size=VOCAB)
    if family == "falcon":
        config = transformers.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, **small)
        cls = transformers.FalconForCausalLM
    elif family == "falcon_alibi":
        config = transformers.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True, **small)
        cls = transformers.FalconForCausalLM
    elif family == "bloom":
        config = transformers.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **small)
        cls = transformers.BloomForCausalLM
    elif family == "deberta_v2":
        config = transformers.DebertaV2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
            max_relative_positions=16, **small,
        )
        cls = transformers.DebertaV2Model
    elif family == "t5":
        config = transformers.T5Config(
            d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
            pad_token_id=0, **small,
        )
        cls = transformers.T5ForConditionalGeneration
    elif family in ("bart", "marian"):
        config_class = transformers.BartConfig if family == "bart" else transformers.MarianConfig
        config = config_class(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=1,
            decoder_start_token_id=2, **small,
        )
        cls = transformers.BartForConditionalGeneration if family == "bart" else transformers.MarianMTModel
    elif family == "whisper":
        config = transformers.WhisperConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16, max_target_positions=32,
            pad_token_id=1, decoder_start_token_id=2, **small,
        )
        cls = transformers.WhisperForConditionalGeneration
    else:
        raise ValueError(family)
    config.initializer_range = 0.5  # peaked attention: near-uniform rows would hide mistakes
    torch.manual_seed(0)
    # Raises where the family does not accept the implementation (BLOOM and DeBERTa-v2: eager only).
    return cls._from_config(config, attn_implementation=attn_implementation).eval()


def with_implementation(model, attn_implementation):
    """A model of the same class and weights computing with another attention implementation."""
    other = type(model)._from_config(copy.deepcopy(model.config), attn_implementation=attn_implementation)
    other.load_state_dict(model.state_dict())
    return other.to(next(model.parameters()).dtype).eval()


def decoder_lm(name, attn_implementation="eager"):
    """A 2-layer random model; Llama and Gemma 2 with 2 key/value heads for 4 query heads (GQA).

    Weights are drawn large enough for peaked attention: near-uniform rows would hide mistakes.
    """
    common = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, max_position_embeddings=64, initializer_range=0.5
    )
    if name == "gpt2":
        config = transformers.GPT2Config(
            n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0,
            initializer_range=0.5,
        )
        model_class = transformers.GPT2LMHeadModel
    elif name == "bert":
        config = transformers.BertConfig(num_hidden_layers=2, num_attention_heads=4, **common)
        model_class = transformers.BertModel
    elif name == "llama":
        config = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **common)
        model_class = transformers.LlamaForCausalLM
    elif name == "gemma2":  # tanh soft-capping of the logits and a sliding-window layer
        config = transformers.Gemma2Config(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
            attn_logit_softcapping=5.0, **common
        )
        model_class = transformers.Gemma2ForCausalLM
    elif name == "mistral":  # a sliding window of 4 keys on every layer
        config = transformers.MistralConfig(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=4, **common
        )
        model_class = transformers.MistralForCausalLM
    elif name == "gpt_oss":  # a learned attention "sink" per head takes a share of every row
        config = transformers.GptOssConfig(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
            num_local_experts=2, num_experts_per_tok=1, **{**common, "intermediate_size": 32},
        )
        model_class = transformers.GptOssForCausalLM
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    return model_class(config).eval()


def chunked_llama4(attn_implementation="eager"):
    """A 4-layer random Llama 4 text model: chunks of 3 tokens in layers 0-2 (rotary), full attention in
    layer 3 (no rotary, as Llama 4's every 4th layer)."""
    config = transformers.Llama4TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, intermediate_size_mlp=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, attention_chunk_size=3, num_local_experts=2,
        max_position_embeddings=64, initializer_range=0.5,
    )
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    return transformers.Llama4ForCausalLM(config).eval()


ENCODER_DECODERS = ("t5", "bart", "marian", "whisper")


def encoder_decoder_inputs(family, batch=2, source=7, target=5, seed=1):
    """Inputs (no padding): token ids, or Whisper's features [B, mels, 2 * frames]."""
    g = torch.Generator().manual_seed(seed)
    if family == "whisper":
        inputs = {"input_features": torch.randn(batch, 8, 32, generator=g)}
    else:
        inputs = {"input_ids": torch.randint(3, VOCAB, (batch, source), generator=g)}
    inputs["decoder_input_ids"] = torch.randint(3, VOCAB, (batch, target), generator=g)
    return inputs


class FlexModel(torch.nn.Module):
    """Blocks on FlexAttention, imported by name as users do; a causal block mask and an ALiBi-like score_mod."""

    def __init__(self, layers=2, dim=16, heads=2, score_mod=None):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.qkv = torch.nn.ModuleList(torch.nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.score_mod = score_mod if score_mod is not None else (lambda score, b, h, q, kv: score - 0.3 * (q - kv))
        self.last = []

    def forward(self, x):
        from torch.nn.attention.flex_attention import create_block_mask

        b, n, _ = x.shape
        mask = create_block_mask(lambda b, h, q, kv: q >= kv, None, None, n, n, device=x.device)
        self.last = []
        for qkv in self.qkv:
            q, k, v = qkv(x).view(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
            self.last.append((q.detach(), k.detach()))
            x = x + flex_attention(q, k, v, score_mod=self.score_mod, block_mask=mask).transpose(1, 2).reshape(b, n, -1)
        return x

    def reference(self):
        out = []
        for q, k in self.last:
            n = q.shape[2]
            i = torch.arange(n)
            logits = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5 - 0.3 * (i[:, None] - i[None, :])
            out.append(logits.masked_fill(i[:, None] < i[None, :], float("-inf")).softmax(-1).float())
        return out


try:
    from torch.nn.attention.flex_attention import flex_attention  # noqa: E402  (bound by name, as users do)
except ImportError:  # torch < 2.5: the FlexAttention tests skip
    flex_attention = None


def tiny_gpt2(layers=2, heads=4, embed=32, vocab=None, seed=0, attn_implementation="eager"):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=layers, n_head=heads, n_embd=embed, vocab_size=vocab or 50257, n_positions=1024,
    )
    config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(config).eval()


def train_step(model, optimizer, batch):
    """One language-model training step on `batch` (ids as labels too); the loss as a float."""
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


class Sentences(torch.utils.data.Dataset):
    """16 copies of one tokenised sentence, with labels: a Trainer's training set."""

    def __init__(self, tokenizer):
        self.ids = [tokenizer("The cat sat on the mat and looked at the dog.")["input_ids"]] * 16

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = torch.tensor(self.ids[i])
        return {"input_ids": ids, "labels": ids}


def save_tiny_gpt2(folder):
    """A tiny GPT-2 (2 layers x 4 heads, seed 3) and GPT-2's tokenizer saved in `folder`, as `--model` reads them."""
    from tb_attention.convert import assets

    tiny_gpt2(layers=2, heads=4, embed=32, seed=3).save_pretrained(folder)
    assets.gpt2_tokenizer().save_pretrained(folder)
    return folder
