"""The objects of start-up are frozen out of the garbage collector's passes, and nothing is frozen that was garbage.

Each case runs in a fresh interpreter: freezing is for the whole process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .live import ROOT


def _python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_loading_the_ready_application_freezes_what_it_loaded():
    out = _python(
        "import gc; before = gc.get_freeze_count(); import mediastream.asgi; "
        "print(before, gc.get_freeze_count(), len(gc.get_objects()))",
        DJANGO_SETTINGS_MODULE="settings",
    )
    before, frozen, still_walked = map(int, out.split())
    assert before == 0
    # Django, the apps, Twisted and the routes: far more than the collector is left to walk right after.
    assert frozen > 50_000 and still_walked < frozen / 10, out


def test_garbage_of_start_up_is_collected_before_the_freeze_not_kept_forever():
    out = _python(
        "import gc, weakref\n"
        "from mediastream.collector import freeze_startup_objects\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a\n"
        "gone = weakref.ref(a); kept = Node(); alive = weakref.ref(kept)\n"
        "del a, b\n"
        "frozen = freeze_startup_objects()\n"
        "print(gone() is None, alive() is kept, frozen == gc.get_freeze_count() > 0)\n"
    )
    assert out == "True True True"


def test_a_channel_layer_that_cannot_be_built_does_not_stop_the_application_loading(tmp_path):
    """It is the startup probe's to report (one line naming CHANNEL_LAYERS); HTTP and the health check still serve."""
    (tmp_path / "broken_layer_settings.py").write_text(
        "from settings import *  # noqa: F403\n"
        'CHANNEL_LAYERS = {"default": {"BACKEND": "no_such_package.ChannelLayer"}}\n'
    )
    out = _python(
        "import mediastream.asgi; print('loaded')",
        DJANGO_SETTINGS_MODULE="broken_layer_settings",
        PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}",
    )
    assert out.endswith("loaded")
