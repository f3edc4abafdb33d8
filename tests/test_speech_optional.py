"""Without the speech extra, the tests that need it skip with the reason instead of erroring."""

import subprocess
import sys
import xml.etree.ElementTree as ET

from .live import ROOT

SPEECH_TEST_MODULES = [
    "tests/test_speech_e2e.py",
    "tests/test_model_pinning.py",
    "tests/test_vad.py",
    "tests/test_transcription_backends.py",
]


def test_speech_tests_skip_when_piper_and_faster_whisper_cannot_be_imported(tmp_path):
    report = tmp_path / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.speech_hidden", "-q", f"--junitxml={report}", *SPEECH_TEST_MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # A test module that fails to import is a collection error: pytest exits with 2.
    assert result.returncode == 0, result.stdout + result.stderr
    cases = ET.parse(report).getroot().findall(".//testcase")
    modules = {path.removesuffix(".py").replace("/", ".") for path in SPEECH_TEST_MODULES}
    # classname: the module's dotted name, then the test class if there is one.
    reported = {module for module in modules for case in cases if f"{case.get('classname')}.".startswith(f"{module}.")}
    assert reported == modules
    for case in cases:
        outcomes = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        assert outcomes == ["skipped"], (case.get("name"), outcomes)
        reason = case.find("skipped").get("message")
        assert "the speech extra is not installed (piper, faster_whisper missing)" in reason, reason
