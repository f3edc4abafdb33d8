"""The console's page parts ship in the package: its template, script and stylesheet match package-data."""

from __future__ import annotations

import fnmatch
import tomllib

from .live import ROOT

PATTERNS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]

CONSOLE_FILES = [
    "mediastream/templates/mediastream/console/panel.html",
    "mediastream/static/mediastream/console/console.js",
    "mediastream/static/mediastream/console/console.css",
]


def test_the_console_files_exist_and_are_package_data():
    for relative in CONSOLE_FILES:
        path = ROOT / relative
        assert path.is_file(), relative
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in PATTERNS), f"{relative} would not be in the wheel"


def test_the_panel_loads_the_script_and_stylesheet_it_ships():
    from django.contrib.staticfiles import finders

    panel = (ROOT / CONSOLE_FILES[0]).read_text()
    for static in ("mediastream/console/console.js", "mediastream/console/console.css"):
        assert f"{{% static '{static}' %}}" in panel
        assert finders.find(static), static
