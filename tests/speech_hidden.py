"""pytest plugin: run the tests that need the speech extra as if it were not installed.

``pytest -p tests.speech_hidden tests/...`` puts ``None`` in ``sys.modules`` for
piper and faster_whisper before any test module (or tests.support) is imported:
``import piper`` then raises ModuleNotFoundError and
``importlib.util.find_spec("piper")`` returns None, exactly as when the package is
absent. Only tests marked ``requires_speech`` run; the others are deselected.
"""

import sys

HIDDEN = ("piper", "faster_whisper")

for _name in HIDDEN:
    sys.modules[_name] = None


def pytest_collection_modifyitems(config, items):
    from tests.support import requires_speech

    marked = [item for item in items if requires_speech.mark in item.iter_markers("skipif")]
    config.hook.pytest_deselected(items=[item for item in items if item not in marked])
    items[:] = marked
