"""The examples run without API keys and recall session 1 in session 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("example", ["pipecat_agent.py", "livekit_agent.py"])
def test_example_recalls_the_first_session_in_the_second(example):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "VOICERAG_PIPELINE__BUDGET_MS": "3000"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    second = out.stdout.split("=== session 2 ===", 1)[1]
    assert "(user said) my sister Ana just moved to Porto" in second
    assert "(user said) I am allergic to peanuts" in second
