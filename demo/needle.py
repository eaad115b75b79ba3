"""Demo run `smollm2-needle`: SmolLM2-135M-Instruct reads Wikipedia with a secret number hidden at several depths
and is asked for it at the end; the Long view shows the heads that go back for it (retrieval heads).

    python -m demo.needle [LOGDIR] [--tokens 4096] [--depths 0.1,0.5,0.9]
"""

import argparse
import pathlib

RUN = "smollm2-needle"
TOKENS = 4096  # --full: 8,192 (SmolLM2's context)
FULL_TOKENS = 8192
DEPTHS = (0.5,)  # where the needle sits in the haystack: 0 its start, 1 its end
FULL_DEPTHS = (0.1, 0.5, 0.9)  # --full
SHOWN_HEADS = 5  # the strongest retrieval heads, printed


def main(logdir, num_tokens=TOKENS, depths=DEPTHS):
    """Logs a NeedleProbe of SmolLM2-135M-Instruct at step 0 (run RUN); returns its metrics ({name: [L, H]})."""
    import numpy as np
    import torch
    import transformers

    from tb_attention import Writer
    from tb_attention.convert import assets
    from tb_attention.probes.needle import NeedleProbe

    folder = str(assets.smollm2_dir())
    # SDPA: the model computes its attention without [N, N] weights; the probe reads q and k, in chunks.
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                              attn_implementation="sdpa").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    probe = NeedleProbe(tokenizer, assets.wikipedia_sentences(), lengths=[num_tokens], depths=list(depths))
    recalled = [_recalls(model, needle) for needle in probe.needles]
    with Writer(pathlib.Path(logdir) / RUN) as writer:
        metrics = probe.log(writer, model, 0)
    retrieval = np.asarray(metrics["retrieval"], dtype=np.float64)
    print(f"  {len(probe.needles)} inputs of {num_tokens:,} tokens, needle at depths "
          f"{', '.join(f'{d:.0%}' for d in depths)}; the model reads the number back: "
          f"{sum(recalled)} of {len(recalled)}")
    order = np.argsort(-retrieval, axis=None)[:SHOWN_HEADS]
    print("  strongest retrieval heads (share of the answer's digits whose top key is the digit it copies):")
    for flat in order:
        layer, head = np.unravel_index(flat, retrieval.shape)
        print(f"    layer {layer:2d} head {head}: {retrieval[layer, head]:.2f}")
    print(f"  heads that retrieve at all (score > 0): {int((retrieval > 0).sum())} of {retrieval.size}; "
          f"open run {RUN} in the Long view, layer {order[0] // retrieval.shape[1]}")
    return metrics


def _recalls(model, needle):
    """Whether the model, teacher-forced on the input, predicts every digit of the answer (greedy)."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([needle.input_ids])
        logits = model(ids, logits_to_keep=len(needle.answers) + 1).logits[0]
    # logits_to_keep=m keeps the last m positions: the answer queries are the last len(answers) + 1 but one.
    first = ids.shape[1] - logits.shape[0]
    predicted = logits.argmax(-1)
    return all(int(predicted[i - first]) == needle.input_ids[i + 1] for i in needle.answers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m demo.needle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", nargs="?", default="demo_output/logdir")
    parser.add_argument("--tokens", type=int, default=TOKENS, help=f"tokens per input (default {TOKENS})")
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)), help="needle depths, comma-separated")
    args = parser.parse_args()
    main(args.logdir, args.tokens, [float(d) for d in args.depths.split(",")])
