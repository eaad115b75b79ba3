"""`tb-attention export` and serve/export.py: the pack holds exactly what a real TensorBoard serves for
the selection, the file carries it within its size bound, and every bad selection is refused."""

import json
import re
import subprocess
import sys
import urllib.parse

import pytest

from tb_attention.serve import export
from tests.support.dashboard_logdir import write_dashboard_logdir, write_groups_logdir
from tests.support.dashboard_page import browser  # noqa: F401 (a fixture)
from tests.support.embedded_page import offline  # noqa: F401 (a fixture)
from tests.support.tensorboard import ROOT, serving


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "logs"
    with pytest.warns(UserWarning, match="top 32"):  # the long example is stored top-k
        write_dashboard_logdir(path, long_n=600)
    return path


@pytest.fixture(scope="module")
def groups_logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("export-groups") / "logs"
    write_groups_logdir(path)
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tb_attention.cli", "export", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def split_key(key):
    route, _, query = key.partition("?")
    return route, {name: urllib.parse.unquote(value) for name, value in (p.split("=", 1) for p in query.split("&") if p)}


def served(server, key):
    """What the real TensorBoard answers to the pack's request `key`: parsed JSON or raw bytes."""
    route, params = split_key(key)
    status, body, _ = server.get("/" + route, params, raw=True)
    assert status == 200, f"{key}: {status} {body[:300]!r}"
    return body


@pytest.mark.parametrize("which", ["dashboard", "groups"])
def test_every_answer_in_the_pack_is_what_tensorboard_serves(request, which):
    logdir = request.getfixturevalue("logdir" if which == "dashboard" else "groups_logdir")
    pack = export.pack_logdir(logdir, steps="all")
    index, bodies = export.read_pack(pack.to_bytes())
    routes = {split_key(k)[0] for k in index["entries"]}
    assert routes >= {"tags", "examples", "attention", "metric", "metrics", "compare"}
    with serving(logdir, lambda tags: bool(tags)) as server:
        for key, (_, _, kind) in index["entries"].items():
            body = bodies[key]
            if key == "tags?":
                tags = served(server, key)
                assert json.loads(body) == {run: {t: e for t, e in entries.items()} for run, entries in json.loads(tags).items()}
            elif kind == "json":
                assert json.loads(body) == json.loads(served(server, key)), key
            else:  # the blob as served (inflated by TensorBoard for a client that does not accept gzip)
                assert body == served(server, key), key
    # every layer of every example of every step, and its q/k where logged
    for key in (k for k in index["entries"] if k.startswith("examples?")):
        _, where = split_key(key)
        for example in json.loads(bodies[key])["examples"]:
            for g in example["groups"]:
                named = dict(where, example=example["index"], group=None if g is example["groups"][0] else g["name"])
                for layer in range(g["num_layers"]):
                    assert export.key("attention", dict(named, layer=layer)) in pack
                    assert (export.key("qk", dict(named, layer=layer)) in pack) == g["has_qk"]


def test_a_selection_keeps_only_what_it_names(logdir):
    pack = export.pack_logdir(logdir, runs=["train"], tags=["probe"], steps=[50], examples=[0, 2])
    index, bodies = export.read_pack(pack.to_bytes())
    tags = json.loads(bodies["tags?"])
    assert list(tags) == ["train"]
    assert tags["train"]["probe"]["steps"] == [50]
    assert "long" not in tags["train"]
    assert tags["train"]["probe/entropy"]["steps"] == [0, 50, 100]  # a metric's whole history
    assert tags["train"]["probe/exemplars"]["steps"] == [50]
    examples = json.loads(bodies[export.key("examples", dict(run="train", tag="probe", step=50))])["examples"]
    assert [e["index"] for e in examples] == [0, 2]
    assert not any("example=1&" in k for k in index["entries"])
    assert not any("step=100" in k and not k.startswith("metric?") for k in index["entries"])
    assert index["run_order"] == ["train"]


def test_the_default_is_each_tags_newest_step(logdir):
    index, bodies = export.read_pack(export.pack_logdir(logdir, runs=["train"]).to_bytes())
    assert json.loads(bodies["tags?"])["train"]["probe"]["steps"] == [100]


@pytest.mark.parametrize(
    "selection, message",
    [
        (dict(runs=["nope"]), "no run 'nope' with attention data; the logdir has 'checkpoint-100', 'eval', 'train'"),
        (dict(runs=["train"], tags=["nope"]), "no attention tag 'nope' in run(s) train; they have ['long', 'probe']"),
        (dict(runs=["train"], tags=["probe"], steps=[7]), "'train'/'probe' holds none of steps [7]; it has steps [0, 50, 100]"),
        (dict(runs=["train"], tags=["probe"], steps=[0, 7]), "no selected attention tag holds step(s) [7]"),
        (dict(runs=["train"], tags=["probe"], examples=[9]), "'train'/'probe' step 100 has examples [0, 1, 2]; not [9]"),
    ],
)
def test_a_selection_the_logdir_does_not_hold_is_refused(logdir, selection, message):
    with pytest.raises(export.ExportError, match=re.escape(message)):
        export.pack_logdir(logdir, **selection)


def test_an_empty_logdir_is_refused(tmp_path):
    with pytest.raises(export.ExportError, match="holds no tb-attention data"):
        export.pack_logdir(tmp_path)


def test_latin1_embedding_escapes_what_the_html_parser_would_change():
    data = bytes(range(256)) * 4
    text = export.latin1_escape(data)
    assert not set(text) & {0x00, 0x0D, 0x3C}
    out, i = bytearray(), 0
    while i < len(text):
        out.append(text[i + 1] ^ 0x40 if text[i] == 0x7E else text[i])
        i += 2 if text[i] == 0x7E else 1
    assert bytes(out) == data
    assert len(text) == len(data) + 4 * 4  # four escaped values per 256


def test_the_command_writes_one_file_within_the_stored_bytes_plus_the_bundle(logdir, tmp_path):
    out = tmp_path / "probe.html"
    result = run_cli("--logdir", logdir, "--run", "train", "--step", "all", "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    page = out.read_bytes()
    assert page.startswith(b"<!doctype html>") and b'<meta charset="windows-1252">' in page
    stored = sum(f.stat().st_size for f in (logdir / "train").iterdir())
    bundle = (export.STATIC_DIR / "embed.js").stat().st_size
    assert len(page) <= 1.1 * (stored + bundle), (len(page), stored, bundle)
    head, _, rest = page.partition(b'data-encoding="latin1"')
    data = rest[rest.index(b">") + 1 : rest.index(b"</script>")]
    assert b"<" not in data  # nothing in the data can end its element
    assert page.count(b"</script>") == 2
    assert all(b < 0x80 for b in page.replace(data, b""))  # the rest is ASCII, whatever the charset


def test_the_command_refuses_bad_arguments_before_writing(logdir, tmp_path):
    out = tmp_path / "x.html"
    cases = [
        (["--run", "nope"], "no run 'nope'"),
        (["--run", "train", "--step", "all,3"], "--step all takes no other steps"),
        (["--run", "train", "--step", "x"], "--step takes step numbers or 'all'"),
        (["--run", "train", "--view", "arcs"], "--view must be one of head, model, neuron"),
        (["--run", "train", "--examples", "1,a"], "must be comma-separated example indices"),
    ]
    for args, message in cases:
        result = run_cli("--logdir", logdir, *args, "-o", out)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert not out.exists()
    result = run_cli("--logdir", "az://bucket/logs", "--run", "train", "-o", out)
    assert result.returncode == 2 and "az://" in result.stderr
    result = run_cli("--logdir", logdir, "--run", "train", "-o", tmp_path / "missing" / "x.html")
    assert result.returncode == 2 and "does not exist" in result.stderr


# ---------------------------------------------------------------------------------------------
# The file in Chromium, from file://, offline


@pytest.fixture(scope="module")
def exported(logdir, tmp_path_factory):
    """The whole dashboard logdir as one file (latin1) and the train run's probe as base64."""
    folder = tmp_path_factory.mktemp("exported")
    files = {"all": folder / "all.html", "base64": folder / "base64.html", "logdir": logdir}
    assert run_cli("--logdir", logdir, "--run", "train", "--run", "checkpoint-100", "--step", "all", "-o",
                   files["all"]).returncode == 0
    assert run_cli("--logdir", logdir, "--run", "train", "--tag", "probe", "--encoding", "base64", "--view", "model",
                   "--theme", "dark", "-o", files["base64"]).returncode == 0
    return files


def test_the_exported_file_opens_offline_and_its_views_answer_the_mouse(offline, exported):
    from tests.support.dashboard_logdir import SENTENCE, XSS_TOKEN

    pack_index, _ = export.read_pack(export.pack_logdir(exported["logdir"], runs=["train", "checkpoint-100"],
                                                             steps="all").to_bytes())
    board = offline.open_file(exported["all"])
    frame = board.frame
    assert board.data("tokens") == str(len(SENTENCE))  # the train run's newest probe step, example 0
    board.hover_token("from", 8)
    assert board.data("focus") == "hover:from:8"
    board.click_token("from", 5)
    assert board.data("focus") == "locked:from:5"
    board.screenshot("export_head")
    # the panel lists the runs and steps packed, and nothing else
    runs = frame.eval_on_selector_all("[data-control=run] option", "os => os.map(o => o.value)")
    assert runs == pack_index["run_order"] == ["checkpoint-100", "train"]
    for view, figure in [("model", "model"), ("neuron", "neuron"), ("metrics", "metric-heatmap"),
                         ("analysis", "analysis"), ("exemplars", "exemplars"), ("compare", "compare-diff")]:
        frame.click(f"[data-view={view}]")
        board.wait(figure)
    board.screenshot("export_compare")
    # hostile token text is text: no dialog fired (the fixture fails on one) and it is shown as is
    frame.click("[data-view=head]")
    frame.click("[data-example='2']")
    assert XSS_TOKEN in frame.text_content("[data-example='2'] .example-text")
    board.wait("head")


def test_a_base64_file_opens_on_its_view_and_theme_under_a_strict_csp(offline, exported, tmp_path):
    from tests.support.embedded_page import with_csp

    strict = tmp_path / "strict.html"
    strict.write_bytes(with_csp(exported["base64"].read_bytes()))
    board = offline.open_file(strict, wait_for="model")
    board.screenshot("export_model_dark")


def test_a_file_in_a_sandboxed_iframe_renders(offline, exported, tmp_path):
    from tests.support.embedded_page import in_sandboxed_iframe

    outer = tmp_path / "outer.html"
    outer.write_text(in_sandboxed_iframe(exported["base64"].read_text(encoding="ascii")), encoding="utf-8")
    offline.open_file(outer, wait_for=None)
    offline.in_frame().wait("model")


def test_a_file_relabelled_as_utf8_says_so_instead_of_showing_nothing(offline, exported, tmp_path):
    page = exported["all"].read_bytes().replace(b'charset="windows-1252"', b'charset="utf-8"')
    wrong = tmp_path / "wrong.html"
    wrong.write_bytes(page)
    offline.open_file(wrong, wait_for=None)
    offline.frame.wait_for_selector("text=/windows-1252/", timeout=15_000)
    offline.problems.clear()  # the page may log the decoding failure it shows
