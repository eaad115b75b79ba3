"""Our dashboard in Jupyter with bertviz's calls: `from tb_attention.notebook import head_view, model_view`.

head_view / model_view: attention you have (bertviz's arguments); neuron_view.show: a model's query and key
vectors (bertviz's module path); show: a model captured as a Probe captures it, every view; show_run: what a
training run logged. Each output carries the dashboard and its data: no server, no CDN, no network.
"""

from tb_attention.notebook import neuron_view
from tb_attention.notebook.dashboard import show, show_run
from tb_attention.notebook.views import head_view, model_view

__all__ = ["head_view", "model_view", "neuron_view", "show", "show_run"]
