"""A real JupyterLab 4 or Notebook 7 server on 127.0.0.1, and a notebook run in it from the browser, as a
user runs one."""

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
import uuid

from tests.support.tensorboard import ROOT, free_port, stop

APPS = {"lab": ("jupyterlab", "lab/tree"), "notebook": ("notebook", "notebooks")}  # module, a notebook's URL


@contextlib.contextmanager
def jupyterlab(root, app="lab"):
    """`jupyter lab` (or `jupyter notebook`, Notebook 7) serving folder `root`; yields its base URL and
    token. Its kernels import this checkout (PYTHONPATH) and run on one thread, like the test process."""
    port, token = free_port(), uuid.uuid4().hex
    log = pathlib.Path(root) / f"jupyterlab-{port}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "JUPYTER_PLATFORM_DIRS": "1"}
    args = [sys.executable, "-m", APPS[app][0], "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.open_browser=False", "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
            "jupyterlab.NeverCheckForUpdate"]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"jupyter {app} exited: {log.read_text(errors='replace')[-3000:]}")
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"jupyter {app} did not serve within 60 s: {log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.3)
            yield url, token
        finally:
            stop(process, timeout=15)


def write_notebook(path, cells):
    """A notebook of code cells (no outputs) for the python3 kernel."""
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
                  for source in cells],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    pathlib.Path(path).write_text(json.dumps(notebook, indent=1), encoding="utf-8")


def run_all_cells(page, url, token, name, app="lab", timeout=180_000):
    """Opens notebook `name` and runs every cell from the Run menu, as a user does; returns once every
    cell has run (an execution count in each prompt)."""
    page.goto(f"{url}/{APPS[app][1]}/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # the kernel has started: JupyterLab's status bar says so; Notebook 7 names the kernel in its toolbar
    started = page.get_by_text("| Idle") if app == "lab" else page.locator(".jp-KernelName", has_text="Python 3")
    started.wait_for(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    page.wait_for_function(
        "() => { const p = [...document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputPrompt')].map(e => e.textContent);"
        " return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)); }",
        timeout=timeout,
    )
