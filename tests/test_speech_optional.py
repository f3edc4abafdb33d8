"""Without the speech extra, the tests that need it skip with the reason instead of erroring."""

import subprocess
import sys
import xml.etree.ElementTree as ET

from .live import ROOT

SPEECH_TEST_MODULES = ["tests/test_speech_e2e.py", "tests/test_model_pinning.py", "tests/test_vad.py"]


def test_speech_tests_skip_when_piper_and_faster_whisper_cannot_be_imported(tmp_path):
    report = tmp_path / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.speech_hidden", "-q", f"--junitxml={report}", *SPEECH_TEST_MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cases = ET.parse(report).getroot().findall(".//testcase")
    assert {case.get("classname").rsplit(".", 1)[-1] for case in cases} == {
        module.removeprefix("tests/").removesuffix(".py") for module in SPEECH_TEST_MODULES
    }
    for case in cases:
        outcomes = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        assert outcomes == ["skipped"], (case.get("name"), outcomes)
        reason = case.find("skipped").get("message")
        assert "the speech extra is not installed (piper, faster_whisper missing)" in reason, reason
