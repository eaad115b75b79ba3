"""Demo run `smollm2-chat`: SmolLM2-135M-Instruct answers three short questions; the Generation view replays each answer.

    python -m demo.chat [LOGDIR] [--max-new-tokens N]
"""

import argparse
import pathlib

RUN = "smollm2-chat"
TAG = "generation"
QUESTIONS = (
    "What is the capital of France?",
    "How many days are in a week?",
    "What is the largest planet in the solar system?",
)
MAX_NEW_TOKENS = 32  # tokens per answer at most


def main(logdir, max_new_tokens=MAX_NEW_TOKENS):
    """Logs SmolLM2-135M-Instruct's greedy answers to QUESTIONS (chat messages) at step 0; returns the answers."""
    import torch
    import transformers

    from tb_attention import Probe, Writer
    from tb_attention.convert import assets

    folder = str(assets.smollm2_dir())
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)  # its chat template frames each question
    conversations = [[{"role": "user", "content": question}] for question in QUESTIONS]
    probe = Probe(tokenizer, conversations, TAG, generate=dict(max_new_tokens=max_new_tokens))
    with Writer(pathlib.Path(logdir) / RUN) as writer:
        probe.log(writer, model, 0)
    answers = [g["text"].strip() for g in logged_generations(pathlib.Path(logdir) / RUN)]
    for question, answer in zip(QUESTIONS, answers):
        print(f"  {question} -> {answer}")
    return answers


def logged_generations(run_dir):
    """The `generation` fields of the examples in `run_dir`'s event files (TAG, step 0), as written."""
    from tensorboard.backend.event_processing import event_file_loader

    from tb_attention.storage import codecs

    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == TAG:
                    manifest = codecs.decode_manifest(value.tensor.string_val[0])
                    return [entry["generation"] for entry in manifest["examples"]]
    raise FileNotFoundError(f"no {TAG!r} examples in {run_dir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m demo.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", nargs="?", default="demo_output/logdir")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    args = parser.parse_args()
    main(args.logdir, args.max_new_tokens)
