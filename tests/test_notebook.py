"""tb_attention.notebook: bertviz's calls on our dashboard. What each call stores and opens on, and what it
refuses; then a real Jupyter kernel runs a notebook of every function (bertviz's README calls among them,
only the import changed) and its outputs open in Chromium offline: alone, together on one page under a
strict CSP, and each in a sandboxed iframe as Colab shows them."""

import base64
import html
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tb_attention.notebook import head_view, model_view, neuron_view, show, show_run
from tb_attention.serve import export
from tb_attention.storage import codecs
from tests.support.dashboard_page import browser  # noqa: F401 (a fixture)
from tests.support.embedded_page import offline  # noqa: F401 (a fixture)
from tests.support.notebook_run import CELLS, HOSTILE_TOKENS, run_notebook, save_models
from tests.support.tensorboard import ROOT

TOKENS = ["[CLS]", "the", "cat", "sat", "[SEP]"]
TOLERANCE = codecs.MAX_QUANTIZATION_ERROR


def weights(layers=3, heads=2, n=5, m=None, batch=1, seed=0):
    """bertviz's form: a tuple of per-layer [batch, heads, n, m] arrays of softmax rows."""
    a = np.random.default_rng(seed).random((layers, batch, heads, n, m or n))
    return tuple((a / a.sum(-1, keepdims=True)).astype(np.float32))


def parse(fragment):
    """(options, pack index, pack bodies) of a notebook output's HTML."""
    data = re.search(r'data-encoding="base64"[^>]*>([^<]*)</script>', fragment).group(1)
    options = json.loads(html.unescape(re.search(r'data-options="([^"]*)"', fragment).group(1)))
    return (options, *export.read_pack(base64.b64decode(data)))


def returned(function, *args, **kwargs):
    return parse(function(*args, html_action="return", **kwargs).data)


def example(bodies, run="notebook", tag="attention", step=0):
    return json.loads(bodies[export.key("examples", dict(run=run, tag=tag, step=step))])["examples"][0]


def stored(bodies, layer, group=None, run="notebook", tag="attention"):
    """[H, Nq, Nk] of one layer as packed (to within the storage's quantisation)."""
    raw = bodies[export.key("attention", dict(run=run, tag=tag, step=0, example=0, group=group, layer=layer))]
    return codecs.decode_attention(codecs.compress(raw)).attention[0]


# ---------------------------------------------------------------------------------------------
# What the calls store and open on


def test_head_view_stores_bertviz_attention_and_opens_on_its_layer_and_heads():
    a = weights()
    options, _, bodies = returned(head_view, a, TOKENS, layer=2, heads=[1])
    assert options == {"params": {"view": "head", "run": "notebook", "tag": "attention", "layer": "2", "heads": "1"},
                       "theme": "light"}
    shown = example(bodies)
    assert (shown["tokens"], shown["num_layers"], shown["num_heads"]) == (TOKENS, 3, 2)
    for layer in range(3):
        np.testing.assert_allclose(stored(bodies, layer), a[layer][0], atol=TOLERANCE)


def test_torch_tensors_straight_from_a_model_are_taken():
    torch = pytest.importorskip("torch")
    a = tuple(torch.tensor(x, requires_grad=True) * 1.0 for x in weights())  # as outputs.attentions: with grad
    _, _, bodies = returned(model_view, a, TOKENS)
    np.testing.assert_allclose(stored(bodies, 1), a[1][0].detach().numpy(), atol=TOLERANCE)


def test_include_layers_keeps_those_layers_under_their_own_index():
    a = weights(layers=4)
    _, _, bodies = returned(model_view, a, TOKENS, include_layers=[1, 3])
    assert example(bodies)["groups"][0]["layer_names"] == ["layer 1", "layer 3"]
    np.testing.assert_allclose(stored(bodies, 1), a[3][0], atol=TOLERANCE)
    options, _, _ = returned(head_view, a, TOKENS, include_layers=[1, 3], layer=3)
    assert options["params"]["layer"] == "1"  # the model's layer 3 is the second shown


def test_include_heads_keeps_those_heads_in_the_order_given():
    a = weights(heads=4)
    _, _, bodies = returned(model_view, a, TOKENS, include_heads=[3, 0])
    assert example(bodies)["num_heads"] == 2
    np.testing.assert_allclose(stored(bodies, 0), a[0][0][[3, 0]], atol=TOLERANCE)


def test_display_mode_is_the_theme_dark_by_default_for_the_model_view_as_in_bertviz():
    assert returned(model_view, weights(), TOKENS)[0]["theme"] == "dark"
    assert returned(model_view, weights(), TOKENS, display_mode="light")[0]["theme"] == "light"
    assert returned(head_view, weights(), TOKENS)[0]["theme"] == "light"
    assert returned(head_view, weights(), TOKENS, display_mode="dark")[0]["theme"] == "dark"


def test_a_sentence_pair_stores_where_sentence_b_starts():
    assert example(returned(head_view, weights(), TOKENS, 2)[2])["segments"] == [2]


def test_an_encoder_decoder_is_three_groups_with_their_own_tokens():
    source, target = ["▁She", "▁sees", "</s>"], ["<pad>", "▁Sie", "▁sieht", "</s>"]
    cross = weights(n=4, m=3, seed=2)
    _, _, bodies = returned(model_view, encoder_attention=weights(n=3), decoder_attention=weights(n=4, seed=1),
                            cross_attention=cross, encoder_tokens=source, decoder_tokens=target, prettify_tokens=False)
    groups = example(bodies)["groups"]
    assert [(g["name"], g["tokens"], g["key_tokens"]) for g in groups] == [
        ("encoder", source, source), ("decoder", target, target), ("cross", target, source)]
    np.testing.assert_allclose(stored(bodies, 1, group="cross"), cross[1][0], atol=TOLERANCE)


def test_prettify_tokens_turns_sentencepiece_marks_into_spaces_and_leaves_byte_level_tokens_to_the_dashboard():
    tokens = ["▁the", "Ġcat", "sat</w>", "##s", "<s>"]
    assert example(returned(head_view, weights(), tokens)[2])["tokens"] == [" the", "Ġcat", "sat", "##s", "<s>"]
    assert example(returned(head_view, weights(), tokens, prettify_tokens=False)[2])["tokens"] == tokens


def nan_layers():
    a = [x.copy() for x in weights()]
    a[1][0, 1, 2, 3] = np.nan
    return a


@pytest.mark.parametrize("call, error, message", [
    (lambda: head_view(weights(batch=2), TOKENS), ValueError,
     "attention holds a batch of 2 inputs ([batch, heads, N, N] per layer); a view shows one input: pass "
     "[layer[i:i + 1] for layer in attention] for input i"),
    (lambda: head_view(weights(), TOKENS[:4]), ValueError,
     "attention: 4 tokens given for attention over 5 tokens; they must match one to one"),
    (lambda: head_view(weights(n=5, m=4), TOKENS), ValueError,
     "attention must be self-attention, [heads, N, N] per layer; got [2, 5, 4]"),
    (lambda: head_view(nan_layers(), TOKENS), ValueError,
     "attention has NaN or infinite weights (1 of them; first at layer 1, head 1, query 2, key 3: nan)"),
    (lambda: model_view([x * 0.5 for x in weights(layers=4)], TOKENS, include_layers=[2, 3]), codecs.RowSumError,
     "attention rows must sum to 1: layer 2, head 0, query 0 sums to 0.5000"),
    (lambda: head_view(weights(), [101, 1996, 4937, 2938, 102]), TypeError,
     "tokens of attention: token 0 is int 101, not a string: pass token strings (tokenizer.convert_ids_to_tokens(ids))"),
    (lambda: head_view((), TOKENS), ValueError,
     "attention is empty (no layers). With transformers 5 a model's outputs end with cross_attentions"),
    (lambda: head_view(weights(), TOKENS, encoder_tokens=TOKENS), ValueError,
     "give attention and tokens (a self-attention model) or the encoder-decoder arguments, not both"),
    (lambda: head_view(tokens=TOKENS), ValueError, "no attention to show"),
    (lambda: head_view(weights(), None), ValueError, "tokens are required with attention"),
    (lambda: head_view(encoder_attention=weights(), encoder_tokens=TOKENS, cross_attention=weights(n=2, m=5)),
     ValueError, "cross_attention needs decoder_tokens"),
    (lambda: head_view(encoder_attention=weights(), encoder_tokens=TOKENS, decoder_tokens=TOKENS[:2],
                       cross_attention=weights(n=2, m=4)), ValueError,
     "cross_attention is [heads, decoder tokens, encoder tokens] per layer: got [2, 2, 4] for 2 decoder_tokens and "
     "5 encoder_tokens"),
    (lambda: head_view(weights(), TOKENS, include_layers=[0, 1], layer=2), ValueError,
     "layer 2 is not one of the layers shown (0 to 1)"),
    (lambda: head_view(weights(), TOKENS, include_layers=[0, 3]), ValueError,
     "include_layers must be distinct indices of the 3 layers of attention (0 to 2), got [0, 3]"),
    (lambda: head_view(weights(), TOKENS, heads=[2]), ValueError, "heads must be distinct indices of the 2 heads"),
    (lambda: head_view(weights(), TOKENS, sentence_b_start=5), ValueError,
     "sentence_b_start must be the index of sentence B's first token, between 1 and 4 (5 tokens), got 5"),
    (lambda: head_view(weights(), TOKENS, html_action="show"), ValueError,
     "html_action must be 'view' (display the output) or 'return'"),
    (lambda: model_view(weights(), TOKENS, display_mode="blue"), ValueError,
     "display_mode must be 'light' or 'dark', got 'blue'"),
])
def test_bad_input_is_refused_naming_the_argument_and_what_to_do(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert message in str(raised.value)


def test_html_action_view_displays_the_output_and_returns_nothing(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    assert head_view(weights(), TOKENS) is None
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.HTML) and shown[0].data.startswith("<div id=\"tba-")


def test_importing_the_notebook_loads_neither_ipython_nor_torch():
    script = ("import sys, tb_attention.notebook; "
              "print(sorted(m for m in ('IPython', 'torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# A model: the neuron view, show, Probe.to_html; a logdir: show_run


@pytest.fixture(scope="module")
def gpt2(gpt2_tokenizer):
    from tests.support.models import tiny_gpt2

    return tiny_gpt2(), gpt2_tokenizer


def test_neuron_view_captures_queries_and_keys_of_any_model_and_opens_on_its_layer_and_head(gpt2):
    model, tokenizer = gpt2
    options, index, bodies = returned(neuron_view.show, model, "gpt2", tokenizer, "The cat sat on the mat",
                                      layer=1, head=3)
    assert options == {"params": {"view": "neuron", "run": "GPT2LMHeadModel", "tag": "probe", "layer": "1",
                                  "heads": "3"}, "theme": "dark"}
    shown = example(bodies, "GPT2LMHeadModel", "probe")
    assert shown["has_qk"] and shown["segments"] is None
    assert export.key("qk", dict(run="GPT2LMHeadModel", tag="probe", step=0, example=0, layer=1)) in index["entries"]
    with pytest.raises(ValueError, match=re.escape("head 4 is out of range: GPT2LMHeadModel has 4 heads (0 to 3)")):
        neuron_view.show(model, "gpt2", tokenizer, "The cat", head=4, html_action="return")
    with pytest.raises(TypeError, match="model_type is bertviz's model name"):
        neuron_view.show(model, tokenizer, "The cat", "sat", html_action="return")  # bertviz: model_type comes second


def test_show_captures_as_a_probe_does_and_opens_on_the_view_of_the_probes_kind(gpt2):
    import tb_attention

    model, tokenizer = gpt2
    options, _, bodies = returned(show, model, tokenizer, ["The cat sat.", ("A pair", "of texts")], syntax=False)
    assert options["params"] == {"view": "head", "run": "GPT2LMHeadModel", "tag": "probe"}
    examples = json.loads(bodies[export.key("examples", dict(run="GPT2LMHeadModel", tag="probe", step=0))])["examples"]
    assert [e["segments"] for e in examples] == [None, [2]]
    assert export.key("metric", dict(run="GPT2LMHeadModel", tag="probe/entropy")) in bodies  # metrics, as log writes
    probe = tb_attention.Probe(tokenizer, ["He was born in"], generate=dict(max_new_tokens=3))
    options, _, _ = returned(show, model, probe)
    assert options["params"]["view"] == "generation"
    with pytest.raises(ValueError, match="view must be one of head, model, neuron"):
        show(model, probe, view="arcs")


def test_probe_to_html_is_one_file_of_what_log_writes(gpt2):
    import tb_attention
    from tests.support import vision_models

    model, tokenizer = gpt2
    page = tb_attention.Probe(tokenizer, ["The cat sat."], syntax=False).to_html(model, step=7, theme="dark")
    assert page.startswith(b"<!doctype html>") and b'<meta charset="windows-1252">' in page
    options = json.loads(html.unescape(re.search(rb'data-options="([^"]*)"', page).group(1).decode()))
    assert options == {"params": {"view": "head", "run": "GPT2LMHeadModel", "tag": "probe"}, "theme": "dark"}
    data = re.search(rb'data-encoding="latin1"[^>]*>(.*?)</script>', page, re.S).group(1)
    unescaped = re.sub(rb"~(.)", lambda m: bytes([m.group(1)[0] ^ 0x40]), data, flags=re.S)
    index, _ = export.read_pack(unescaped)
    assert "examples?run=GPT2LMHeadModel&step=7&tag=probe" in index["entries"]
    image = tb_attention.ImageProbe(vision_models.processor(), vision_models.images()[:1])
    assert b'&quot;view&quot;:&quot;image&quot;' in image.to_html(vision_models.build("vit"))


@pytest.fixture(scope="module")
def logdir(gpt2, tmp_path_factory):
    import tb_attention

    model, tokenizer = gpt2
    path = tmp_path_factory.mktemp("notebook-run")
    probe = tb_attention.Probe(tokenizer, ["The cat sat on the mat."], syntax=False)
    with tb_attention.Writer(path / "train") as writer:
        for step in (0, 10, 20):
            probe.log(writer, model, step)
    with tb_attention.Writer(path / "checkpoint-0") as writer:
        probe.log(writer, model, 0)
    return path


def test_show_run_shows_the_steps_asked_for(logdir):
    options, _, bodies = returned(show_run, logdir, "train")
    assert json.loads(bodies["tags?"])["train"]["probe"]["steps"] == [20]  # the newest
    assert json.loads(bodies["tags?"])["train"]["probe/entropy"]["steps"] == [0, 10, 20]  # a metric's history
    options, _, bodies = returned(show_run, logdir, "train", step=10, view="model")
    assert options["params"] == {"run": "train", "step": "10", "view": "model"}
    assert json.loads(bodies["tags?"])["train"]["probe"]["steps"] == [10]
    _, _, bodies = returned(show_run, logdir, "train", step="all", tag="probe")
    assert json.loads(bodies["tags?"])["train"]["probe"]["steps"] == [0, 10, 20]
    with pytest.raises(export.ExportError, match=re.escape("'train'/'probe' holds none of steps [5]")):
        show_run(logdir, "train", step=5)


def test_show_run_puts_runs_side_by_side(logdir):
    options, index, _ = returned(show_run, logdir, ["train", "checkpoint-0"], view="compare")
    assert options["params"] == {"run": "train", "view": "compare"}
    assert index["run_order"] == ["checkpoint-0", "train"]
    assert export.key("compare", dict(tag="probe", run_a="train", step_a=20, run_b="checkpoint-0", step_b=0)) in index["entries"]


# ---------------------------------------------------------------------------------------------
# A real kernel runs the notebook; its outputs in Chromium


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The notebook of tests/support/notebook_run.py, run once: {"html": {name: [outputs]}, "stdout", "out"}."""
    folder = tmp_path_factory.mktemp("notebook")
    nb, outputs, stdout = run_notebook(folder, save_models(folder / "models"))
    return {"nb": nb, "html": outputs, "stdout": stdout, "out": folder / "out"}


SHOWN = [(name, figure) for name, figure, _ in CELLS if figure is not None]
VIEW_OF = {"metric-heatmap": "metrics"}


def test_the_kernel_runs_every_call_and_each_displays_one_self_contained_output(notebook):
    for name, figure, _ in CELLS:
        outputs = notebook["html"][name]
        assert len(outputs) == (1 if figure else 0), name
        for fragment in outputs:
            options, _, _ = parse(fragment)
            assert options["params"]["view"] == VIEW_OF.get(figure, figure), name
            assert "<script src" not in fragment and "require" not in fragment.split("<script>")[0], name
    assert notebook["stdout"]["readme_html_action_return"] == "IPython.core.display HTML\n"
    assert {p.name for p in notebook["out"].iterdir()} == {"head_view.html", "neuron_view.html", "probe.html"}
    # bertviz's README filtering call on a 12-layer model: layers 5 and 6, by their own index
    _, _, bodies = parse(notebook["html"]["readme_include_layers"][0])
    assert example(bodies)["groups"][0]["layer_names"] == ["layer 5", "layer 6"]
    # hostile token text travels inside the base64 pack, never as markup
    hostile = notebook["html"]["hostile_tokens"][0]
    assert "<img" not in hostile and "<b>" not in hostile and hostile.count("</script>") == 2  # the pack's, ours


def notebook_page(path, fragments, csp=False):
    """A page holding outputs one after the other, as a notebook shows them; returns the path."""
    from tests.support.embedded_page import CSP

    policy = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' if csp else ""
    body = "".join(f'<div class="output">{f}</div>' for f in fragments)
    path.write_text(f'<!doctype html><html><head><meta charset="utf-8">{policy}</head><body>{body}</body></html>',
                    encoding="utf-8")
    return path


def container(fragment):
    return "#" + re.match(r'<div id="(tba-[0-9a-f]+)"', fragment).group(1)


def answers_the_mouse(board, figure, scope="", layer="0"):
    """Hovers the figure where it reacts, and checks that it did."""
    canvas = board.frame.locator(f"{scope} canvas[data-figure={figure}]".strip())
    canvas.scroll_into_view_if_needed()
    box, layout = canvas.bounding_box(), json.loads(canvas.get_attribute("data-layout") or "{}")
    if figure == "head":
        x0, x1 = layout["query"]
        board.page.mouse.move(box["x"] + (x0 + x1) / 2, box["y"] + layout["top"] + 1 * layout["row"])
        board.frame.wait_for_function("c => c.dataset.focus === 'hover:from:1'", arg=canvas.element_handle())
    elif figure == "model":
        board.page.mouse.move(box["x"] + layout["left"] + layout["step"] + layout["thumb"] / 2,
                              box["y"] + layout["top"] + layout["thumb"] / 2)
        board.frame.locator(f"{scope} .inspector".strip(), has_text=f"Layer {layer}, head 1: click to open it").wait_for()
    elif figure == "neuron":
        board.page.mouse.move(box["x"] + sum(layout["query"]) / 2, box["y"] + layout["top"] + 2 * layout["row"])
        board.frame.wait_for_function("c => c.dataset.query === '2'", arg=canvas.element_handle())


@pytest.mark.parametrize("name, figure", SHOWN)
def test_each_output_renders_offline_and_answers_the_mouse(offline, notebook, tmp_path, name, figure):
    page = notebook_page(tmp_path / f"{name}.html", notebook["html"][name])
    board = offline.open_file(page, wait_for=figure)
    answers_the_mouse(board, figure, layer="5" if name == "readme_include_layers" else "0")
    board.screenshot(f"notebook_{name}")
    if name == "readme_include_layers":  # the layers kept are called by the model's index, as in bertviz
        board.frame.click("[data-view=head]")
        board.wait("head")
        assert board.frame.eval_on_selector_all("[data-control=layer] option", "os => os.map(o => o.text)") == ["5", "6"]


def test_outputs_on_one_page_under_a_strict_csp_render_and_stay_independent(offline, notebook, tmp_path):
    fragments = [notebook["html"][name][0] for name, _ in SHOWN]
    board = offline.open_file(notebook_page(tmp_path / "notebook.html", fragments, csp=True), wait_for=None)
    for fragment, (_, figure) in zip(fragments, SHOWN):
        board.wait(figure, container=container(fragment))
    first, second = (container(notebook["html"][n][0]) for n in ("readme_head_view", "readme_default_layer_heads"))
    board.frame.locator(first).scroll_into_view_if_needed()
    answers_the_mouse(board, "head", first)
    assert board.frame.locator(f"{second} canvas[data-figure=head]").get_attribute("data-focus") != "hover:from:1"
    assert board.frame.input_value(f"{first} [data-control=layer]") == "0"
    assert board.frame.input_value(f"{second} [data-control=layer]") == "2"  # head_view(..., layer=2, heads=[3,5])
    board.screenshot("notebook_page_strict_csp")


def test_outputs_in_sandboxed_iframes_render_as_in_colab(offline, notebook, tmp_path):
    frames = "".join(
        f'<iframe sandbox="allow-scripts" style="width:100%;height:700px;border:0" '
        f'srcdoc="{html.escape(notebook["html"][name][0], quote=True)}"></iframe>' for name, _ in SHOWN)
    page = tmp_path / "colab.html"
    page.write_text(f'<!doctype html><html><head><meta charset="utf-8"></head><body>{frames}</body></html>',
                    encoding="utf-8")
    offline.open_file(page, wait_for=None)
    for i, (name, figure) in enumerate(SHOWN):
        offline.page.locator("iframe").nth(i).scroll_into_view_if_needed()
        board = offline.in_frame(f"iframe >> nth={i}")
        board.wait(figure)
        if name == "readme_head_view":
            answers_the_mouse(board, "head")
    offline.screenshot("notebook_sandboxed_iframes")


def test_hostile_token_text_stays_text(offline, notebook, tmp_path):
    board = offline.open_file(notebook_page(tmp_path / "hostile.html", notebook["html"]["hostile_tokens"]))
    frame = board.frame
    preview = frame.text_content("[data-example='0'] .example-text")
    assert all(token in preview for token in HOSTILE_TOKENS), preview
    assert frame.locator("img").count() == 0 and frame.locator("b").count() == 0
    board.click_token("from", 0)
    assert json.dumps(HOSTILE_TOKENS[0]) in frame.text_content("[data-inspector=tokens]")
    board.screenshot("notebook_hostile_tokens")
    # (the fixture fails the test on any dialog, console error or exception)


@pytest.mark.parametrize("file, figure", [("head_view.html", "head"), ("neuron_view.html", "neuron"),
                                          ("probe.html", "head")])
def test_returned_html_and_probe_to_html_open_as_files(offline, notebook, file, figure):
    offline.open_file(notebook["out"] / file, wait_for=figure)


def test_the_notebook_as_nbconvert_exports_it_renders_every_output_offline(browser, notebook, tmp_path):
    """A notebook shared as HTML (jupyter nbconvert --to html): our outputs need nothing from the network; the
    only requests are those of nbconvert's own template (require.js, MathJax), refused here."""
    import nbconvert

    from tests.support.embedded_page import offline_page

    page = tmp_path / "exported.html"
    page.write_text(nbconvert.HTMLExporter().from_notebook_node(notebook["nb"])[0], encoding="utf-8")
    template = set(re.findall(r'<script[^>]* src="(https://[^"]+)"', page.read_text(encoding="utf-8")))
    context, board = offline_page(browser)
    try:
        board.open_file(page, wait_for=None)
        for name, figure in SHOWN:
            fragment = notebook["html"][name][0]
            board.frame.locator(container(fragment)).scroll_into_view_if_needed()
            board.wait(figure, container=container(fragment))
        assert set(board.requests) == template and all("cdnjs.cloudflare.com" in url for url in template)
        assert board.problems == ["console error: Failed to load resource: net::ERR_FAILED"] * len(template)
    finally:
        context.close()
