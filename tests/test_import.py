"""Importing what napari imports to list and open files stays light: no torch, no dask.

napari imports the reader when a file is opened and discovers plugins at start-up; torch
alone takes seconds to import, so it must wait until a model is fitted or applied. Each
check runs in a fresh interpreter, where nothing was imported before.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import napari_nmsg
from napari_nmsg import engine

HEAVY = ("torch", "dask", "distributed")
READER_IMPORT_BUDGET_S = 0.5


def fresh_python(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_reader_import_is_fast_and_leaves_torch_and_dask_out():
    found = fresh_python(
        "import json, sys, time\n"
        "started = time.perf_counter()\n"
        "import napari_nmsg._reader\n"
        "seconds = time.perf_counter() - started\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'seconds': seconds, 'heavy': heavy}))\n"
    )
    assert found["heavy"] == []
    assert found["seconds"] <= READER_IMPORT_BUDGET_S


def test_plugin_discovery_and_file_contributions_import_without_torch():
    """What npe2 does for ``npe2 list`` and to open, save or make sample data: discover the
    manifest, then import the modules of the reader, writer and sample-data commands."""
    found = fresh_python(
        "import importlib, json, sys\n"
        "from npe2 import PluginManager\n"
        "pm = PluginManager()\n"
        "pm.discover()\n"
        "manifest = pm.get_manifest('napari-nmsg')\n"
        "c = manifest.contributions\n"
        "used = {x.command for x in (*c.readers, *c.writers, *c.sample_data)}\n"
        "modules = sorted({k.python_name.split(':')[0] for k in c.commands if k.id in used})\n"
        "for name in modules:\n"
        "    importlib.import_module(name)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'modules': modules, 'heavy': heavy}))\n"
    )
    assert found["modules"] == [
        "napari_nmsg._reader",
        "napari_nmsg._sample_data",
        "napari_nmsg._writer",
    ]
    assert found["heavy"] == []


def test_batch_imports_where_the_unix_only_resource_module_is_missing():
    """As on Windows: ``resource`` cannot be imported; the batch module and its memory
    report still work (without the peak RSS)."""
    found = fresh_python(
        "import json, sys\n"
        "sys.modules['resource'] = None  # makes `import resource` raise ImportError\n"
        "from napari_nmsg import batch\n"
        "print(json.dumps(batch._memory_facts('cpu')))\n"
    )
    assert "peak_rss_mb" not in found


def test_batch_and_io_modules_import_without_torch_or_dask():
    """The batch driver plans, resumes and summarises without them; torch and Dask load
    when a task runs."""
    found = fresh_python(
        "import json, sys\n"
        "import napari_nmsg.batch, napari_nmsg.errors, napari_nmsg.io\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy}))\n"
    )
    assert found["heavy"] == []


def test_the_command_line_builds_its_options_without_torch():
    """``nmsg --help`` and a mistyped option answer at once (2 s sooner: torch's import);
    torch loads when a command runs the engine."""
    found = fresh_python(
        "import json, sys\n"
        "import napari_nmsg.engine\n"
        "from napari_nmsg.cli import build_parser\n"
        "build_parser().format_help()\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy}))\n"
    )
    assert found["heavy"] == []


@pytest.mark.parametrize(
    ("package", "name"),
    [(napari_nmsg, n) for n in napari_nmsg.__all__] + [(engine, n) for n in engine.__all__],
)
def test_every_public_name_resolves(package, name):
    assert getattr(package, name) is not None
    assert name in dir(package)


@pytest.mark.parametrize("package", [napari_nmsg, engine])
def test_an_unknown_attribute_is_an_attribute_error(package):
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018


def test_version_is_one_string_everywhere():
    from napari_nmsg import _version, cli
    from napari_nmsg.engine import checkpoint

    assert napari_nmsg.__version__ == _version.__version__ == checkpoint.__version__
    assert cli.__version__ == _version.__version__
