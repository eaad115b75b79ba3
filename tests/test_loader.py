"""The entry point: light to import, registered, keeps every step."""

import argparse
import importlib.metadata
import subprocess
import sys

from tb_attention.serve.loader import TBLoader
from tests.support.tensorboard import ROOT


def test_importing_the_entry_point_pulls_in_no_heavy_library():
    code = (
        "import sys, tb_attention.serve.loader, tb_attention.serve.plugin;"
        "print(sorted(m for m in ('torch', 'transformers', 'spacy', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_is_registered_for_tensorboard():
    points = importlib.metadata.entry_points(group="tensorboard_plugins")
    (point,) = [p for p in points if p.name == "attention"]
    assert point.value == "tb_attention.serve.loader:TBLoader"
    assert point.load() is TBLoader


def test_fix_flags_keeps_every_step_by_default():
    flags = argparse.Namespace(samples_per_plugin={})
    TBLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"attention": 0}


def test_fix_flags_leaves_the_users_setting():
    flags = argparse.Namespace(samples_per_plugin={"attention": 5, "images": 3})
    TBLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"attention": 5, "images": 3}


def test_loading_leaves_the_allocator_alone():
    # Allocator tuning is the user's choice (MALLOC_ARENA_MAX, README); the plugin does not call mallopt.
    source = (ROOT / "tb_attention" / "serve" / "loader.py").read_text()
    assert "mallopt" not in source and "ctypes" not in source
