"""A real JupyterLab server on 127.0.0.1, and a notebook run in it from the browser, as a user runs one."""

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
import uuid

from tests.support.tensorboard import ROOT, free_port


@contextlib.contextmanager
def jupyterlab(root):
    """`jupyter lab` serving folder `root`; yields its base URL with the token. Its kernels import
    this checkout (PYTHONPATH) and run on one thread, like the test process."""
    port, token = free_port(), uuid.uuid4().hex
    log = pathlib.Path(root) / f"jupyterlab-{port}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "JUPYTER_PLATFORM_DIRS": "1"}
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
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
                    raise RuntimeError(f"jupyter lab exited: {log.read_text(errors='replace')[-3000:]}")
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"jupyter lab did not serve within 60 s: {log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.3)
            yield url, token
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def write_notebook(path, cells):
    """A notebook of code cells (no outputs) for the python3 kernel."""
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
                  for source in cells],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    pathlib.Path(path).write_text(json.dumps(notebook, indent=1), encoding="utf-8")


def run_all_cells(page, url, token, name, timeout=180_000):
    """Opens notebook `name` in JupyterLab and runs every cell from its Run menu, as a user does;
    returns once every cell has run (an execution count in each prompt) and the kernel is idle."""
    page.goto(f"{url}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.get_by_text("| Idle").wait_for(timeout=60_000)  # the status bar: the kernel has started
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    page.wait_for_function(
        "() => { const p = [...document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputPrompt')].map(e => e.textContent);"
        " return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)); }",
        timeout=timeout,
    )
    page.get_by_text("| Idle").wait_for(timeout=timeout)
