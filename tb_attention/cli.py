"""The `tb-attention` command: `analyze` a model over a corpus, `probe` a saved checkpoint, `export` what a
logdir holds as one HTML file."""

import argparse
import json
import pathlib
import sys

from tb_attention.runtime import defaults
from tb_attention.storage import schema
from tb_attention.storage.logdir import LogdirError

WIKIPEDIA = "wikipedia"
LOGDIR_HELP = "TensorBoard log directory: a local folder, or an s3:// or gs:// URL (README, 'Logdir on cloud storage')"
DTYPES = ("float32", "bfloat16", "float16")  # as analysis.DTYPES names them (torch-free here, for --help)


def _analyze_parser(subparsers):
    p = subparsers.add_parser(
        "analyze",
        help="the aggregate attention analysis of Vig & Belinkov (2019) of a model over a corpus",
        description=(
            "Runs a local Hugging Face model over one sentence per line and writes, as run NAME at "
            "step 0: every per-head metric (<tag>/<metric>), the part-of-speech tables, the top "
            "exemplars per head and the attention of a sample of sentences. Under torchrun each rank "
            "analyses a shard of the corpus."
        ),
    )
    p.add_argument("--model", required=True, help="a Hugging Face model folder (config.json + weights) or a .gguf file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sentences", help="a UTF-8 text file, one sentence per line")
    source.add_argument("--corpus", choices=[WIKIPEDIA], help="a packaged corpus: Wikipedia lead-section sentences "
                        "(a fixed random sample across all articles, seed 0)")
    p.add_argument("--logdir", required=True, help=LOGDIR_HELP)
    p.add_argument(
        "--run", "--run-name", dest="run",
        help="run name (default: the model folder's name); under torchrun spell it --run-name, "
        "as torchrun takes --run for its own --run-path",
    )
    p.add_argument("--tag", default=defaults.CORPUS_TAG, help="tag of the analysis (default: %(default)s)")
    p.add_argument("--limit", type=_positive, help="analyse only the first N sentences")
    p.add_argument("--batch-size", type=_positive, default=defaults.BATCH_SIZE,
                   help="sentences per forward pass (default: %(default)s)")
    p.add_argument("--max-length", type=_positive, default=defaults.MAX_LENGTH,
                   help="truncate sentences to N tokens (default: %(default)s)")
    p.add_argument("--sample", type=_non_negative, default=defaults.SAMPLE,
                   help="sentences whose attention is stored (default: %(default)s)")
    p.add_argument("--top-k", type=_positive, default=defaults.TOP_K_EXEMPLARS, help="exemplars kept per head (default: %(default)s)")
    _device_arguments(p)
    p.add_argument("--include-first", action="store_true", help="count attention to the first token in the metrics")
    p.add_argument("--no-syntax", action="store_true", help="skip spaCy: no dependency or part-of-speech metrics")
    p.add_argument("--overwrite", action="store_true", help="replace the run's event files if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_analyze)


def _probe_parser(subparsers):
    p = subparsers.add_parser(
        "probe",
        help="log a probe of texts from a saved checkpoint, as a run of its own",
        description=(
            "Logs the attention, metrics and exemplars of each text (one per line; 'a<TAB>b' for a "
            "sentence pair) at one step, so checkpoints evaluated after training can be compared as runs."
        ),
    )
    p.add_argument("--model", required=True, help="a Hugging Face model folder or .gguf file")
    p.add_argument("--texts", required=True, help="a UTF-8 text file, one text per line (a<TAB>b for pairs)")
    p.add_argument("--logdir", required=True, help=LOGDIR_HELP)
    p.add_argument("--run", "--run-name", dest="run", required=True, help="run name, e.g. the checkpoint's name")
    p.add_argument("--step", type=_non_negative, help="step to log at (default: the checkpoint's global step, else 0)")
    p.add_argument("--tag", default=defaults.PROBE_TAG, help="tag of the probe (default: %(default)s)")
    p.add_argument("--with-qk", action="store_true", help="also store query/key vectors (neuron view)")
    p.add_argument("--generate", type=_positive, metavar="N",
                   help="generate N tokens (greedy) from each text as a prompt, and log the attention of every "
                        "decoding step (the Generation view)")
    p.add_argument("--chat", action="store_true",
                   help="with --generate: each text is a user message, put through the tokenizer's chat template")
    _device_arguments(p)
    p.add_argument("--no-syntax", action="store_true", help="skip spaCy: no dependency or part-of-speech metrics")
    p.add_argument("--overwrite", action="store_true", help="replace the run's event files if it exists")
    p.set_defaults(func=_probe)


def _export_parser(subparsers):
    p = subparsers.add_parser(
        "export",
        help="one self-contained HTML file of what a logdir holds: the dashboard and the chosen examples",
        description=(
            "Writes the Attention dashboard with the chosen runs, tags, steps and examples embedded (their "
            "weights as stored, metrics, exemplars, checkpoint comparisons) into one HTML file that opens "
            "from disk with no server and no network, e.g. as a paper's supplementary material."
        ),
    )
    p.add_argument("--logdir", required=True, help=LOGDIR_HELP)
    p.add_argument("--run", action="append", required=True, help="a run to include (repeat for several)")
    p.add_argument("--tag", action="append", help="an attention tag to include, with its metrics and exemplars "
                   "(repeat for several; default: every attention tag of the runs)")
    p.add_argument("--step", action="append", help="a step to include (repeat, or comma-separated; 'all' for every "
                   "step; default: each tag's newest)")
    p.add_argument("--examples", type=_index_list, help="example indices to include, e.g. 0,2,5 (default: all)")
    p.add_argument("--view", help="the view the file opens on: head, model, neuron, image, generation, metrics, "
                   "analysis, exemplars, compare or health (default: head)")
    p.add_argument("--theme", choices=("light", "dark"), default="light", help="(default: %(default)s)")
    p.add_argument("--encoding", choices=("latin1", "base64"), default="latin1",
                   help="how the data is embedded: latin1 (≈ the stored bytes; the file must be read as windows-1252, "
                        "as it declares: fine from disk) or base64 (a third larger; survives any web server) "
                        "(default: %(default)s)")
    p.add_argument("--title", help="the page's title (default: the logdir's and runs' names)")
    p.add_argument("-o", "--output", required=True, help="the HTML file to write")
    p.set_defaults(func=_export)


def _index_list(value):
    try:
        indices = [int(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated example indices, e.g. 0,2,5; got {value!r}") from None
    if any(i < 0 for i in indices):
        raise argparse.ArgumentTypeError(f"example indices are non-negative; got {value!r}")
    return indices


def _steps(values):
    if values is None:
        return None
    parts = [part.strip() for value in values for part in value.split(",")]
    if "all" in parts:
        if len(parts) > 1:
            raise argparse.ArgumentTypeError("--step all takes no other steps")
        return "all"
    try:
        steps = [_non_negative(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--step takes step numbers or 'all', got {', '.join(parts)}") from None
    return steps


def _device_arguments(p):
    p.add_argument("--device", help="where the model runs: cpu, cuda, cuda:N (default: CUDA when available, "
                   "under torchrun the local rank's GPU; else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="the model's weights (default: %(default)s; attention is recorded in float32 either way)")


def _positive(value):
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _non_negative(value):
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return number


def _analyze(args):
    from tb_attention.convert import assets
    from tb_attention.probes import analysis
    from tb_attention.runtime import distributed
    from tb_attention.storage import logdir, summary

    logdir.check_logdir(args.logdir)  # fail fast, before reading a model or a corpus
    analysis.model_source(args.model)
    device = analysis.resolve_device(args.device)
    if args.corpus == WIKIPEDIA:
        sentences = assets.wikipedia_sentences(limit=args.limit, shuffle=True)
    else:
        sentences = analysis.read_sentences(args.sentences, args.limit)
    run = args.run or pathlib.Path(args.model).name
    rank = distributed.rank()
    if rank == 0:
        directory = logdir.new_run(args.logdir, run, args.overwrite)
    model, tokenizer = analysis.load_model(args.model, device=device, dtype=args.dtype)
    result = analysis.analyze_corpus(
        model,
        tokenizer,
        sentences,
        batch_size=args.batch_size,
        max_length=args.max_length,
        sample=args.sample,
        top_k=args.top_k,
        include_first=args.include_first,
        with_syntax=not args.no_syntax,
        progress=not args.quiet,
    )
    if rank == 0:
        with summary.Writer(directory) as writer:
            analysis.write_analysis(writer, args.tag, result)
        print(f"{run}: {analysis.metadata_summary_line(result)}; written to {directory}", file=sys.stderr)
    return 0


def _probe(args):
    from tb_attention.probes import analysis
    from tb_attention.probes.text import Probe
    from tb_attention.storage import logdir, summary

    logdir.check_logdir(args.logdir)
    analysis.model_source(args.model)
    device = analysis.resolve_device(args.device)
    texts = []
    try:
        lines = pathlib.Path(args.texts).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError) as e:
        raise analysis.AnalysisError(f"--texts {args.texts}: {e}") from None
    for line in lines:
        if line.strip():
            a, tab, b = line.partition("\t")
            texts.append((a.strip(), b.strip()) if tab else line.strip())
    if not texts:
        raise analysis.AnalysisError(f"--texts {args.texts}: the file has no texts")
    if args.generate is not None:
        for option, given in (("--with-qk", args.with_qk), ("--no-syntax", args.no_syntax)):
            if given:
                raise analysis.AnalysisError(f"{option} does not apply to --generate (generation probes store attention "
                                             "and their metrics, no q/k or syntax)")
        if any(isinstance(t, tuple) for t in texts):
            raise analysis.AnalysisError(f"--texts {args.texts}: --generate takes one prompt per line, not a<TAB>b pairs")
    elif args.chat:
        raise analysis.AnalysisError("--chat goes with --generate N: it makes each text a user message to answer")
    step = args.step if args.step is not None else _checkpoint_step(args.model)
    # An existing run is refused before the model loads; with --overwrite it is deleted only once the probe
    # has been accepted, so a refused probe leaves it as it was.
    directory = None if args.overwrite else logdir.new_run(args.logdir, args.run)
    model, tokenizer = analysis.load_model(args.model, device=device, dtype=args.dtype, generate=args.generate is not None)
    if args.generate is not None:
        if args.chat and getattr(tokenizer, "chat_template", None) is None:
            raise analysis.AnalysisError(f"--chat: the tokenizer of {args.model} has no chat template")
        prompts = [[{"role": "user", "content": t}] for t in texts] if args.chat else texts
        try:
            probe = Probe(tokenizer, prompts, name=args.tag, generate=dict(max_new_tokens=args.generate))
            probe.check_model(model)  # before the writer opens: a refused probe writes nothing
        except (ValueError, TypeError) as e:
            raise analysis.AnalysisError(f"--generate {args.generate}: {e}") from None
    else:
        probe = Probe(tokenizer, texts, name=args.tag, with_qk=args.with_qk, syntax=False if args.no_syntax else None)
    if directory is None:
        directory = logdir.new_run(args.logdir, args.run, overwrite=True)
    with summary.Writer(directory) as writer:
        probe.log(writer, model, step)
    what = f"generated from {len(texts)} prompts" if args.generate is not None else f"of {len(texts)} texts"
    print(f"{args.run}: probe {args.tag!r} {what} at step {step}, written to {directory}", file=sys.stderr)
    return 0


def _export(args):
    from tb_attention.serve import export
    from tb_attention.storage import logdir

    logdir.check_logdir(args.logdir)
    out = pathlib.Path(args.output)
    if not out.parent.is_dir():
        raise export.ExportError(f"cannot write {out}: folder {out.parent} does not exist")
    try:
        steps = _steps(args.step)
    except argparse.ArgumentTypeError as e:
        raise export.ExportError(str(e)) from None
    params = {"view": args.view} if args.view else None
    if args.view is not None and args.view not in export.VIEWS:
        raise export.ExportError(f"--view must be one of {', '.join(export.VIEWS)}; got {args.view!r}")
    pack = export.pack_logdir(args.logdir, runs=args.run, tags=args.tag, steps=steps, examples=args.examples,
                              title=args.title)
    data = export.html_document(pack, params=params, theme=args.theme, encoding=args.encoding)
    out.write_bytes(data)
    print(f"wrote {out} ({len(data) / 2**20:.1f} MiB): {export.describe(pack)}")
    return 0


def _checkpoint_step(model_path):
    """The global step a Trainer checkpoint records (trainer_state.json), else 0."""
    state = pathlib.Path(model_path) / "trainer_state.json"
    try:
        return int(json.loads(state.read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="tb-attention", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tb-attention (storage format v{schema.FORMAT_VERSION})")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _analyze_parser(subparsers)
    _probe_parser(subparsers)
    _export_parser(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export":  # no torch for this one
        from tb_attention.serve.export import ExportError

        try:
            return args.func(args)
        except (ExportError, LogdirError) as e:
            parser.exit(2, f"tb-attention export: error: {e}\n")
    from tb_attention.convert.assets import AssetError
    from tb_attention.probes.analysis import AnalysisError
    from tb_attention.probes.syntax import SpacyModelError

    try:
        return args.func(args)
    except (AnalysisError, AssetError, LogdirError, SpacyModelError) as e:
        parser.exit(2, f"tb-attention {args.command}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
