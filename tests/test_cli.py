"""`tb-attention analyze` and `tb-attention probe`, end to end, with torchrun sharding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tb_attention import metrics
from tb_attention.convert import assets
from tb_attention.probes import syntax
from tests.support.models import save_tiny_gpt2
from tests.support.tensorboard import ROOT, python_provider, read_blob_steps, read_examples, request_context

SENTENCES = [
    "The cat sat on the mat.",
    "Florence is a city in central Italy.",
    "She gave her brother a book about Rome.",
    "Rivers flow from the mountains to the sea.",
    "The old man, who lived alone, wrote letters every day.",
    "It's 1,600 years old!",
    "Café owners in Zürich don't open on Sundays.",
    "After the war, production began in Marietta, Georgia.",
    "Birds sing.",
    "The committee approved the new budget on Tuesday.",
]


def run_cli(*args, torchrun=None, check=True):
    command = [sys.executable, "-m", "tb_attention.cli", *args]
    if torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun),
                   "--master_port", str(29500 + os.getpid() % 1000), "-m", "tb_attention.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def sentences_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n\n", encoding="utf-8")
    return path


def read_metrics(logdir, run, step=0):
    provider = python_provider(logdir)
    data = provider.read_tensors(request_context(), experiment_id="", plugin_name="attention", downsample=10**9)[run]
    return {tag: next(d.numpy for d in series if d.step == step) for tag, series in data.items()}


def read_exemplars(logdir, run, tag):
    from tb_attention import metadata

    provider = python_provider(logdir)
    (datum,) = read_blob_steps(provider, run, tag)
    return metadata.decode_json(provider.read_blob(request_context(), blob_key=datum.values[0].blob_key))


def expected_metrics(model_dir):
    """The definitions applied directly to the model's eager attention, one sentence at a time."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    attentions = []
    for sentence in SENTENCES:
        ids = torch.tensor([tokenizer(sentence)["input_ids"]])
        with torch.no_grad():
            attentions.append(torch.stack(model(input_ids=ids, output_attentions=True).attentions)[:, 0])
    parses = syntax.token_syntax(tokenizer, SENTENCES)
    return metrics.compute_metrics(attentions, parses)


def test_analyze_writes_every_metric_equal_to_the_definitions(tmp_path, model_dir, sentences_file, tensorboard):
    run_cli("analyze", "--model", str(model_dir), "--sentences", str(sentences_file), "--logdir", str(tmp_path),
            "--run", "tiny", "--batch-size", "3", "--sample", "2", "--quiet")
    stored = read_metrics(tmp_path, "tiny")
    expected = expected_metrics(model_dir)
    assert set(stored) == {f"corpus/{name}" for name in expected}
    for name, values in expected.items():
        np.testing.assert_allclose(stored[f"corpus/{name}"], values, rtol=1e-4, atol=1e-5, err_msg=name)
    # ...and the same numbers come back through the /metric route of a real TensorBoard.
    server = tensorboard(tmp_path)
    server.wait_for(lambda tags: "corpus/entropy" in tags.get("tiny", {}))
    status, body = server.get("/metric", {"run": "tiny", "tag": "corpus/distance"})
    assert status == 200 and body["steps"] == [0]
    np.testing.assert_allclose(body["values"][0], expected["distance"], rtol=1e-5)
    status, body = server.get("/examples", {"run": "tiny", "tag": "corpus", "step": 0})
    texts = [e["text"] for e in body["examples"]]
    assert texts[:2] == SENTENCES[:2]  # the sample, then the best exemplars
    table = read_exemplars(tmp_path, "tiny", "corpus/exemplars")
    best = table["heads"][0][0][0]
    assert table["inputs"][best["input"]]["text"] in SENTENCES


def test_two_ranks_under_torchrun_equal_one_process(tmp_path, model_dir, sentences_file):
    common = ["analyze", "--model", str(model_dir), "--sentences", str(sentences_file), "--batch-size", "2",
              "--sample", "0", "--quiet", "--run-name", "tiny"]
    run_cli(*common, "--logdir", str(tmp_path / "one"))
    run_cli(*common, "--logdir", str(tmp_path / "two"), torchrun=2)
    one, two = read_metrics(tmp_path / "one", "tiny"), read_metrics(tmp_path / "two", "tiny")
    assert set(one) == set(two)
    for tag in one:
        np.testing.assert_allclose(two[tag], one[tag], rtol=1e-5, atol=1e-6, err_msg=tag)
    one_table, two_table = (read_exemplars(tmp_path / d, "tiny", "corpus/exemplars") for d in ("one", "two"))
    resolve = lambda t: [[[(t["inputs"][e["input"]]["text"], e["from"], e["to"]) for e in h] for h in l] for l in t["heads"]]  # noqa: E731
    assert resolve(one_table) == resolve(two_table)
    assert len(list((tmp_path / "two" / "tiny").glob("events.out.tfevents.*"))) == 1  # rank 0 wrote alone
    # The stored sentences (exemplars only, with --sample 0): one process kept their attention from its pass; rank 0 of two
    # kept its own and ran the other rank's again. Same sentences, same weights.
    one_examples, two_examples = (read_examples(python_provider(tmp_path / d), "tiny", "corpus", 0) for d in ("one", "two"))
    exemplar_texts = lambda examples: {entry["text"]: example for entry, example, _ in examples}  # noqa: E731
    one_exemplars, two_exemplars = exemplar_texts(one_examples), exemplar_texts(two_examples)
    assert one_exemplars.keys() == two_exemplars.keys() and len(one_exemplars) > 2
    for text, example in one_exemplars.items():
        assert example.tokens == two_exemplars[text].tokens
        np.testing.assert_allclose(example.attention, two_exemplars[text].attention, atol=0.01, err_msg=text)


def test_probe_logs_a_checkpoint_at_its_global_step(tmp_path, model_dir, sentences_file):
    checkpoint = tmp_path / "checkpoint-40"
    checkpoint.mkdir()
    for path in model_dir.iterdir():
        (checkpoint / path.name).write_bytes(path.read_bytes())
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 40}))
    texts = tmp_path / "probe.txt"
    texts.write_text("The cat sat on the mat.\nIs it raining?\tNo, it is sunny.\n", encoding="utf-8")
    run_cli("probe", "--model", str(checkpoint), "--texts", str(texts), "--logdir", str(tmp_path / "logs"),
            "--run", "ckpt-40", "--with-qk")
    provider = python_provider(tmp_path / "logs")
    assert [d.step for d in read_blob_steps(provider, "ckpt-40", "probe")] == [40]
    assert "probe/entropy" in read_metrics(tmp_path / "logs", "ckpt-40", step=40)


def test_probe_generate_logs_what_the_checkpoint_writes(tmp_path, model_dir):
    import torch
    import transformers

    texts = tmp_path / "prompts.txt"
    texts.write_text("The cat sat on\nOnce upon a time\n", encoding="utf-8")
    run_cli("probe", "--model", str(model_dir), "--texts", str(texts), "--logdir", str(tmp_path / "logs"),
            "--run", "gen", "--generate", "6", "--tag", "answers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    tokenizer = assets.gpt2_tokenizer()
    examples = read_examples(python_provider(tmp_path / "logs"), "gen", "answers", 0)
    for text, (entry, example, _) in zip(["The cat sat on", "Once upon a time"], examples):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            plain = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                   pad_token_id=tokenizer.eos_token_id)
        assert entry["generation"]["ids"] == plain[0, ids.shape[1]:].tolist()
        assert entry["generation"]["prompt"] == text and example.attention.shape[2] == ids.shape[1] + 5
    assert "answers/prompt_share" in read_metrics(tmp_path / "logs", "gen")


@pytest.mark.parametrize(
    "args, message",
    [
        (["probe", "--model", "MODEL", "--texts", "PROMPTS", "--logdir", "l", "--run", "r", "--generate", "0"],
         "must be a positive integer"),
        (["probe", "--model", "MODEL", "--texts", "PROMPTS", "--logdir", "l", "--run", "r", "--chat"],
         "--chat goes with --generate"),
        (["probe", "--model", "MODEL", "--texts", "PROMPTS", "--logdir", "l", "--run", "r", "--generate", "4", "--chat"],
         "has no chat template"),
        (["probe", "--model", "MODEL", "--texts", "PROMPTS", "--logdir", "l", "--run", "r", "--generate", "4",
          "--with-qk"], "--with-qk does not apply to --generate"),
        (["probe", "--model", "MODEL", "--texts", "PROMPTS", "--logdir", "l", "--run", "r", "--generate", "2000"],
         "more than the model's context of 1024 positions"),
    ],
)
def test_bad_generate_arguments_get_a_clear_error_and_write_nothing(tmp_path, model_dir, args, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat on\n", encoding="utf-8")
    args = [str(model_dir) if a == "MODEL" else str(prompts) if a == "PROMPTS" else
            str(tmp_path / "l") if a == "l" else a for a in args]
    result = run_cli(*args, check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["analyze", "--model", "/nonexistent", "--sentences", "x", "--logdir", "l"], "--model /nonexistent: no such folder"),
        (["analyze", "--model", "MODEL", "--sentences", "/nonexistent.txt", "--logdir", "l"], "no such file"),
        (["analyze", "--model", "MODEL", "--sentences", "EMPTY", "--logdir", "l"], "the file has no sentences"),
        (["analyze", "--model", "MODEL", "--corpus", "wikipedia", "--logdir", "l", "--limit", "0"], "must be a positive integer"),
        (["analyze", "--model", "MODEL", "--logdir", "l"], "one of the arguments --sentences --corpus is required"),
        (["probe", "--model", "MODEL", "--texts", "EMPTY", "--logdir", "l", "--run", "r"], "the file has no texts"),
    ],
)
def test_bad_arguments_get_a_clear_error(tmp_path, model_dir, args, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    args = [str(model_dir) if a == "MODEL" else str(empty) if a == "EMPTY" else a for a in args]
    result = run_cli(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_run_is_not_written_twice(tmp_path, model_dir, sentences_file):
    args = ["analyze", "--model", str(model_dir), "--sentences", str(sentences_file), "--logdir", str(tmp_path),
            "--run", "tiny", "--limit", "2", "--quiet", "--no-syntax"]
    run_cli(*args)
    result = run_cli(*args, check=False)
    assert result.returncode == 2 and "already has event files" in result.stderr
    run_cli(*args, "--overwrite")
    assert len(list((tmp_path / "tiny").glob("events.out.tfevents.*"))) == 1


@pytest.mark.parametrize("command", [[], ["analyze"], ["probe"]])
def test_every_command_has_help(command):
    result = run_cli(*command, "--help")
    assert "usage: tb-attention" in result.stdout


def test_help_shows_the_shared_defaults_without_loading_torch():
    from tb_attention.runtime import defaults

    code = (
        "import sys, contextlib, io\n"
        "from tb_attention import cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    cli.main(['analyze', '--help'])\n"
        "print(out.getvalue())\n"
        "print('loaded:', sorted(m for m in ('torch', 'transformers', 'spacy') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())  # argparse wraps lines
    assert f"sentences per forward pass (default: {defaults.BATCH_SIZE})" in help_text
    assert f"truncate sentences to N tokens (default: {defaults.MAX_LENGTH})" in help_text
    assert f"exemplars kept per head (default: {defaults.TOP_K_EXEMPLARS})" in help_text
    assert "loaded: []" in result.stdout
