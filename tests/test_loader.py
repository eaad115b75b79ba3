"""The entry point: light to import, registered, keeps every step."""

import argparse
import importlib.metadata
import os
import subprocess
import sys

import pytest

from tb_attention.loader import TBLoader
from tests.conftest import ROOT


def test_importing_the_entry_point_pulls_in_no_heavy_library():
    code = (
        "import sys, tb_attention.loader, tb_attention.plugin;"
        "print(sorted(m for m in ('torch', 'transformers', 'spacy', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_is_registered_for_tensorboard():
    points = importlib.metadata.entry_points(group="tensorboard_plugins")
    (point,) = [p for p in points if p.name == "attention"]
    assert point.value == "tb_attention.loader:TBLoader"
    assert point.load() is TBLoader


def test_fix_flags_keeps_every_step_by_default():
    flags = argparse.Namespace(samples_per_plugin={})
    TBLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"attention": 0}


def test_fix_flags_leaves_the_users_setting():
    flags = argparse.Namespace(samples_per_plugin={"attention": 5, "images": 3})
    TBLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"attention": 5, "images": 3}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_arenas_are_capped_unless_the_user_set_them():
    code = "from tb_attention.loader import limit_malloc_arenas; print(limit_malloc_arenas())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    capped = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert capped.stdout.strip() == "True"
    theirs = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "8"},
                            capture_output=True, text=True, check=True, cwd=ROOT)
    assert theirs.stdout.strip() == "False"
