"""Attention while a model generates: each decoding step's rows over the keys its cache held, as computed."""

# How: `intercept.intercepting` hands every attention call of every forward that `generate` (or the
# caller's step function) runs to a `DecodingRecorder`. The prefill's call of a layer brings the
# prompt's rows, each later call of that layer one row per new token, over the keys the cache gave the
# model. Keys are placed at their positions in the sequence: a full cache (dynamic, or static padded to
# its size, whose slots past the sequence are masked) holds positions 0..T-1 in order; a cache shorter
# than the sequence (sliding-window layers, dynamic or static) holds the last positions T-Nk..T-1. Keys
# a cache no longer holds get 0, as the model gave them. Only rows are kept (float32, on the model's
# device until written, so a GPU is not synchronised at every step): never
# an N x N per head beyond the layer `dense_layer` builds when writing.

import contextlib
import dataclasses

import torch

from tb_attention.capture import intercept, scoring
from tb_attention.capture.errors import CaptureError
from tb_attention.capture.record import GROUPS, eval_mode, group_of
from tb_attention.runtime import devices, modules

_MASKED_TOLERANCE = 1e-6  # weight allowed on a static cache's slots past the sequence


@dataclasses.dataclass
class _Layer:
    name: str
    rows: list  # (first query position, float32 [H, n, T] on the model's device: no sync per step)
    queries: int = 0  # query rows seen so far (the next row's position)
    row_max: list = dataclasses.field(default_factory=list)  # per call, float32 [H] on the model's device
    q_rows: list = dataclasses.field(default_factory=list)  # with q/k: per call, the new rows' [H, n, d]
    k_rows: list = dataclasses.field(default_factory=list)  # with q/k: per call, the new positions' [H_kv, n, d]
    scoring: tuple | None = None  # (scale, softcap, sliding_window, sinks as a list): how q·k became weights
    # With q/k: per call, the new rows' additive bias (or None) and visible keys, placed as the weights are.
    bias_rows: list = dataclasses.field(default_factory=list)
    keep_rows: list = dataclasses.field(default_factory=list)

    @property
    def max_logit(self):
        return torch.stack(self.row_max).amax(dim=0).float()


class DecodingRecorder:
    """Listener for `intercept.intercepting`: the rows of every decoding step, per group and layer.

    Groups: `self` for a decoder-only model; an encoder-decoder's `encoder` (its one pass over the
    source), `decoder` and `cross`. `new_rows`: how many query rows each call of the next forward adds
    (None: all of them; a step function that re-runs the whole sequence adds only its last rows).
    """

    def __init__(self, model_name):
        self.model_name = model_name
        self.groups = {}  # group -> [_Layer], in call order
        self._order = {}  # group -> the index of the current forward's last call of it
        self.encoder_decoder = False
        self.new_rows = None
        self.interception = None  # the intercept.Interception feeding this recorder
        self.with_qk = False
        self.frames = None  # keep only the first `frames` encoder positions (queries and keys of `encoder`, keys of `cross`)
        self.decoder_prompt = None  # an encoder-decoder's first decoder input ids, as the prefill read them
        self.within = None  # keep only calls of modules inside this one (a vision-language model's decoder)

    def __call__(self, call):
        # A forward's calls are numbered from 0 (intercept/); its k-th call of a group is layer k.
        if call.index == 0:
            self._order = {}
        if not modules.inside(call.name, self.within):
            return
        group = group_of(call) if self.encoder_decoder else "self"
        if call.shape[0] != 1:
            raise CaptureError(
                f"model {self.model_name}, {call.name}: a decoding step ran {call.shape[0]} sequences at once; a generation "
                "probe follows one (no beam search, several return sequences, guidance or assisted decoding)"
            )
        logits = call.logits()[0]  # [H, Nq, Nk]: one sequence at a time; masked keys -inf
        # One sequence, no padding: no row is wholly masked, so the softmax needs no NaN guard (a few
        # small ops fewer per layer and token: on a busy CPU each costs a thread wake-up).
        weights = torch.softmax(logits, dim=-1) if call.sinks is None else call.weights(logits=logits[None])[0]
        index = self._order[group] = self._order.get(group, -1) + 1
        layers = self.groups.setdefault(group, [])
        if index == len(layers):
            layers.append(_Layer(call.name, []))
        layer = layers[index]
        if self.frames is not None and group in ("encoder", "cross"):  # Whisper: the frames of the real audio
            queries = slice(None, self.frames) if group == "encoder" else slice(None)
            logits, weights = logits[:, queries, : self.frames], weights[:, queries, : self.frames]
        nq, nk = weights.shape[1], weights.shape[2]
        keep = nq if self.new_rows is None or group == "encoder" else min(self.new_rows, nq)
        weights = weights[:, nq - keep :]
        layer.row_max.append(logits[:, nq - keep :].amax(dim=(1, 2)))
        if self.with_qk:
            self._keep_qk(call, layer, group, keep, nk)
            self._keep_masks(call, layer, group, keep)
        if group == "encoder":
            if layer.rows:
                raise CaptureError(f"model {self.model_name}: the encoder ran twice during one generation")
            layer.rows.append((0, weights.float()))
            layer.queries = keep
            return
        if group == "cross":
            layer.rows.append((layer.queries, weights.float()))
            layer.queries += keep
            return
        total = layer.queries + keep  # tokens in the sequence once these rows are read
        if nk >= total:  # a full cache: positions 0..nk-1, slots past the sequence masked
            if nk > total and float(weights[:, :, total:].abs().max()) > _MASKED_TOLERANCE:
                raise CaptureError(
                    f"model {self.model_name}, {call.name}: attention on cache slots past the sequence "
                    f"({nk} keys for {total} tokens); tb-attention cannot place these keys"
                )
        layer.rows.append((layer.queries, _placed(weights, total, 0.0).float()))
        layer.queries = total

    def _keep_qk(self, call, layer, group, keep, nk):
        """The query vectors of the new rows and the key vectors of the new positions (all the encoder's
        for cross attention, once): each position's key as the cache first received it."""
        if call.query is None or call.key is None:
            raise CaptureError(f"model {self.model_name}, {call.name}: this attention code gives no query/key vectors "
                               "(with_qk=True needs them)")
        if layer.scoring is None:
            sinks = None if call.sinks is None else call.sinks.float().cpu().tolist()
            layer.scoring = (float(call.scale), call.softcap, call.sliding_window, sinks)
        nq = call.query.shape[2]
        if group == "encoder":  # its queries are its keys' positions, trimmed alike
            layer.q_rows.append(call.query[0, :, :keep].float())
        else:
            layer.q_rows.append(call.query[0, :, nq - keep :].float())
        if group in ("encoder", "cross"):
            if not layer.k_rows:
                frames = self.frames if self.frames is not None else nk
                layer.k_rows.append(call.key[0, :, :frames].float())
            return
        total = layer.queries + keep  # before this call's rows are counted
        start = total - keep if nk >= total else nk - keep  # where the new positions sit in this call's keys
        layer.k_rows.append(call.key[0, :, start : start + keep].float())

    def _keep_masks(self, call, layer, group, keep):
        """The new rows' additive bias and visible keys, cropped and placed as their weights are (for
        `scoring_rules`; copies, so that no call's tensors stay alive)."""
        _, _, nq, nk = call.shape
        visible = call.visible()
        visible = torch.ones(1, 1, 1, nk, dtype=torch.bool, device=call.key.device) if visible is None else visible
        start = 0 if group == "encoder" else layer.queries
        for rows, t, fill in ((layer.bias_rows, call.additive_bias(), 0.0), (layer.keep_rows, visible, False)):
            if t is None:
                rows.append((start, None))
                continue
            t = scoring.crop(t, 0, nq, nk)
            if self.frames is not None and group in ("encoder", "cross"):
                t = t[:, : self.frames if group == "encoder" else nq, : self.frames]
            t = t[:, t.shape[1] - keep :]
            if group not in ("encoder", "cross"):
                t = _placed(t, layer.queries + keep, fill)
            rows.append((start, t.float().clone() if fill == 0.0 else t.clone()))

    def scoring_rules(self, group, causal):
        """{rule: one value per layer} of every schema.SCORING_RULES rule (None where no layer uses it), as
        the model computed its weights; `causal` as the group is stored. Raises CaptureError where the
        rules cannot describe a layer's mask or bias (`scoring.input_rules`)."""
        layers = self.groups[group]
        found = {rule: [layer.scoring[index] for layer in layers] for index, rule in
                 enumerate(("softcap", "sliding_window", "sinks"), 1)}

        def dense(rows, fill):
            if all(t is None for _, t in rows):
                return None
            known = [t for _, t in rows if t is not None]
            nq = max(start + t.shape[1] for start, t in rows if t is not None)
            out = torch.full((max(t.shape[0] for t in known), nq, max(t.shape[2] for t in known)), fill,
                             dtype=known[0].dtype, device=known[0].device)
            for start, t in rows:
                if t is not None:
                    out[:, start : start + t.shape[1], : t.shape[2]] = t
            return out

        masks = ((dense(layer.bias_rows, 0.0), dense(layer.keep_rows, False), layer.scoring[2], layer.name) for layer in layers)
        found.update(scoring.layer_rules(masks, num_heads=layers[0].rows[0][1].shape[0], causal=causal, model=self.model_name))
        return {rule: values if any(v is not None for v in values) else None for rule, values in found.items()}

    def query_key(self, group, index):
        """(query [H, Nq, d], key [H_kv, Nk, d]) of one layer (float32, host), or None without q/k."""
        layer = self.groups[group][index]
        if not layer.q_rows:
            return None
        return torch.cat(layer.q_rows, dim=1).cpu(), torch.cat(layer.k_rows, dim=1).cpu()

    def scorings(self, group):
        """Per layer: (scale, softcap, sliding_window, sinks) as the model computed its weights."""
        return [layer.scoring for layer in self.groups[group]]

    # ------------------------------------------------------------------------------------------

    def group_names(self):
        order = GROUPS if self.encoder_decoder else ("self",)
        return [name for name in order if name in self.groups]

    def layer_names(self, group):
        return [layer.name for layer in self.groups[group]]

    def num_queries(self, group):
        counts = {layer.queries for layer in self.groups[group]}
        if len(counts) != 1:
            raise CaptureError(f"model {self.model_name}: the {group} layers read different numbers of tokens {sorted(counts)}")
        return counts.pop()

    def dense_layer(self, group, index, num_keys=None):
        """float32 [H, Nq, Nk] of one layer: its rows stacked, each padded with 0 to the last row's keys."""
        layer = self.groups[group][index]
        nq = layer.queries
        nk = num_keys if num_keys is not None else max(rows.shape[2] for _, rows in layer.rows)
        heads = layer.rows[0][1].shape[0]
        dense = torch.zeros(heads, nq, nk, dtype=torch.float32)
        for start, rows in layer.rows:
            dense[:, start : start + rows.shape[1], : rows.shape[2]] = rows.cpu()
        return dense

    def max_logit(self, group):
        """float32 [L, H]: each head's largest logit over the rows read."""
        return torch.stack([layer.max_logit for layer in self.groups[group]]).cpu()


def _placed(rows, total, fill):
    """rows [H, n, Nk] of a call at their key positions, [H, n, total]: a full cache holds positions 0..Nk-1
    (slots past the sequence cut), a cache shorter than the sequence (a sliding window) the last Nk."""
    nk = rows.shape[2]
    if nk >= total:
        return rows[:, :, :total]
    placed = torch.full((rows.shape[0], rows.shape[1], total), fill, dtype=rows.dtype, device=rows.device)
    placed[:, :, total - nk :] = rows
    return placed


@contextlib.contextmanager
def recording_decoding(model):
    """Inside the block, every forward of `model` (unwrapped) runs in eval mode without gradients and hands
    its attention rows to the `DecodingRecorder` it yields; the model's modes are restored after."""
    module = modules.unwrap(model)
    recorder = DecodingRecorder(type(module).__name__)
    recorder.encoder_decoder = bool(getattr(getattr(module, "config", None), "is_encoder_decoder", False))
    def first_decoder_inputs(_, args, kwargs):
        ids = kwargs.get("decoder_input_ids")
        if recorder.decoder_prompt is None and ids is not None:
            recorder.decoder_prompt = [int(t) for t in ids[0].tolist()]

    hook = module.register_forward_pre_hook(first_decoder_inputs, with_kwargs=True) if recorder.encoder_decoder else None
    try:
        with eval_mode(module), torch.no_grad(), modules.eager(), intercept.intercepting(module, recorder) as it:
            recorder.interception = it
            yield recorder
    finally:
        if hook is not None:
            hook.remove()


# -------------------------------------------------------------------------------------------------
# Generating: the model's own `generate`, or a loop over the caller's one-step function

STEP_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "eos_token_id")


@dataclasses.dataclass
class Decoded:
    """One generation: what the model was given, what it wrote, and the attention it read with.

    prompt_ids: the decoding group's first queries (the prompt; an encoder-decoder's start and
        forced decoder tokens). generated_ids: the tokens written, in order. logits: per generated
        token, float32 [vocab] on the host, the distribution it was chosen from (before processors).
    stop: why decoding ended.
    """

    prompt_ids: list
    generated_ids: list
    logits: list
    recorder: DecodingRecorder
    seed: int | None
    stop: str


def eos_ids(model, options):
    """The end-of-sequence ids `generate` stops on (the options' first, else the model's generation config)."""
    eos = options.get("eos_token_id")
    if eos is None:
        config = getattr(model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _stop(generated, eos, options, max_new_tokens):
    if generated and generated[-1] in eos:
        return "eos"
    if max_new_tokens is not None and len(generated) >= max_new_tokens:
        return "max_new_tokens"
    if options.get("stop_strings"):
        return "stop_strings"
    if options.get("max_length") is not None:
        return "max_length"
    return "other"


def generate(model, input_ids, options, *, seed=None, step=None, model_inputs=None, frames=None, with_qk=False,
             within=None):
    """Generates from one prompt (input_ids: a list of ints) and records every decoding step's attention.

    options: `model.generate` keyword arguments (a Hugging Face model), or with `step` the STEP_OPTIONS.
    step: for a model without `generate`, step(model, input_ids [1, n] LongTensor, cache) -> logits
        [1, n, vocab] (or [1, vocab]: the last position's), or (logits, new cache). The first call gets
        the prompt and cache None; later calls the one new token and the cache the last call returned;
        a step that returns no cache gets the whole sequence again (only its new rows are kept).
    seed: set (on a forked RNG: the caller's random state is left as it was) before sampling.
    model_inputs: more `generate` inputs (Whisper's input_features, with input_ids None).
    frames: keep only the first `frames` encoder positions (Whisper: the real audio of a 30 s window).
    with_qk: also keep each new row's query vectors and each new position's key vectors (the neuron view).
    within: keep only the attention of the module of that qualified name (a vision-language model's decoder).
    """
    module = modules.unwrap(model)
    device = devices.device_of(module)
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked, enabled=seed is not None), recording_decoding(module) as recorder:
        recorder.frames = frames
        recorder.with_qk = with_qk
        recorder.within = within
        if seed is not None:
            torch.manual_seed(seed)
        if step is not None:
            prompt, generated, logits = _step_loop(module, step, input_ids, options, recorder, device)
        else:
            prompt, generated, logits = _hf_generate(module, input_ids, options, device, model_inputs)
            if recorder.encoder_decoder and recorder.decoder_prompt is not None:
                prompt = recorder.decoder_prompt  # Whisper's generate returns its sequences without the prompt
    if not recorder.groups:
        raise CaptureError(
            f"model {type(module).__name__} computed no attention that tb-attention can see while generating"
        )
    max_new = options.get("max_new_tokens")
    stop = _stop(generated, eos_ids(module, options), options, max_new)
    return Decoded(prompt, generated, logits, recorder, seed, stop)


def _hf_generate(module, input_ids, options, device, model_inputs):
    inputs = {name: devices.to_device(value, device) for name, value in (model_inputs or {}).items()}
    encoder_decoder = bool(getattr(module.config, "is_encoder_decoder", False))
    if input_ids is not None:
        ids = torch.tensor([input_ids], dtype=torch.long, device=device)
        inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids))
    out = module.generate(**inputs, **options, return_dict_in_generate=True, output_logits=True)
    sequence = [int(t) for t in out.sequences[0].tolist()]
    count = len(out.logits)
    if encoder_decoder:
        prompt, generated = sequence[: len(sequence) - count], sequence[len(sequence) - count :]
    else:
        prompt, generated = sequence[: len(input_ids)], sequence[len(input_ids) :]
        if prompt != list(input_ids) or len(generated) != count:
            raise CaptureError(f"model {type(module).__name__}: generate returned a sequence that does not continue the prompt")
    logits = [step_logits[0].float().cpu() for step_logits in out.logits]
    return prompt, generated, logits


def check_step_options(options):
    """ValueError for an option the one-step loop cannot honour (it is no `generate`)."""
    unknown = sorted(set(options) - set(STEP_OPTIONS))
    if unknown:
        raise ValueError(f"with step=, generation takes only {', '.join(STEP_OPTIONS)}; not {', '.join(unknown)}")


def _step_loop(module, step, input_ids, options, recorder, device):
    check_step_options(options)
    max_new = options["max_new_tokens"]
    eos = eos_ids(module, options)
    sequence, new, cache, generated, logits = list(input_ids), list(input_ids), None, [], []
    for _ in range(max_new):
        recorder.new_rows = len(new)
        fed = new if cache is not None else sequence
        with recorder.interception.running():  # a step need not call the model's forward
            result = step(module, torch.tensor([fed], dtype=torch.long, device=device), cache)
        out, cache = result if isinstance(result, tuple) else (result, None)
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3) or out.shape[0] != 1:
            raise ValueError(
                f"step= must return logits [1, n, vocab] or [1, vocab] (or (logits, cache)), got "
                f"{type(out).__name__ if not isinstance(out, torch.Tensor) else list(out.shape)}"
            )
        last = (out[0, -1] if out.dim() == 3 else out[0]).float()
        token = _choose(last, options)
        logits.append(last.cpu())
        generated.append(token)
        sequence.append(token)
        new = [token]
        if token in eos:
            break
    return list(input_ids), generated, logits


def _choose(logits, options):
    """The next token as `generate` picks it: greedy, or sampled after temperature, top-k and top-p."""
    if not options.get("do_sample"):
        return int(logits.argmax())
    scores = logits / float(options.get("temperature") or 1.0)
    top_k = options.get("top_k")
    if top_k:
        kth = torch.topk(scores, min(int(top_k), scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    top_p = options.get("top_p")
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) >= top_p  # keep the smallest set reaching top_p
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(scores.softmax(-1), 1))
