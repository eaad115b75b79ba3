"""A Jupyter output of the dashboard: the options every notebook function shares, and IPython's display."""

# IPython is imported only here, and only when an output is made: the package imports without it
# (pip install "tb-attention[notebook]" brings it; any Jupyter kernel has it).

from tb_attention.storage import schema

HTML_ACTIONS = ("view", "return")  # bertviz's: display the output, or return the IPython HTML object
DISPLAY_MODES = ("light", "dark")  # our themes, as bertviz names its display modes
DEFAULT_HEIGHT = 640  # px of the output's box (resizable from its corner)


def check(html_action, display_mode, height):
    """ValueErrors naming the choices, before any work is done."""
    if html_action not in HTML_ACTIONS:
        raise ValueError(f"html_action must be 'view' (display the output) or 'return' (return an IPython HTML "
                         f"object; its .data is the HTML), got {html_action!r}")
    if display_mode not in DISPLAY_MODES:
        raise ValueError(f"display_mode must be 'light' or 'dark', got {display_mode!r}")
    if isinstance(height, bool) or not isinstance(height, int) or height < 200:
        raise ValueError(f"height must be a whole number of pixels, at least 200, got {height!r}")


def check_view(view):
    if view is not None and view not in schema.VIEWS:
        raise ValueError(f"view must be one of {', '.join(schema.VIEWS)}, got {view!r}")


def emit(pack, params, display_mode, html_action, height):
    """Shows the pack in the notebook (html_action 'view': returns None) or returns the IPython HTML object
    ('return'): the dashboard, its script and its data in one fragment, opening on `params`."""
    from tb_attention.serve import export

    fragment = export.html_fragment(pack, params={k: v for k, v in params.items() if v is not None},
                                    theme=display_mode, height=height)
    try:
        from IPython.display import HTML, display
    except ImportError:
        raise ImportError("tb_attention.notebook shows its views through IPython: pip install 'tb-attention[notebook]' "
                          "(a Jupyter kernel has it already)") from None
    output = HTML(fragment)
    if html_action == "return":
        return output
    display(output)
    return None
