"""English speech for tests of the speech recognition path, spoken by Debian's espeak-ng.

Never a benchmark (synthetic voice): it only proves words go in and come out. Tests skip with
the reason when espeak-ng or the `asr` extra is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.asr import asr_available


def need_asr() -> None:
    why = asr_available()
    if why:
        pytest.skip(why)


def speak(text: str, out: Path, voice: str = "en-us") -> Path:
    """A WAV of `text` (skips the test when espeak-ng is absent; ./dev test installs it)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng; ./dev test does it as root)")
    subprocess.run([exe, "-v", voice, "-s", "150", "-w", str(out), text], check=True, capture_output=True, timeout=60)
    return out
