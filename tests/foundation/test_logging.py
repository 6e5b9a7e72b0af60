from __future__ import annotations

import subprocess
import sys
import textwrap


def test_library_is_silent_until_enabled() -> None:
    code = textwrap.dedent(
        """
        import sys
        from loguru import logger
        logger.remove()
        logger.add(sys.stdout, level="DEBUG", format="{name}|{message}")
        from riskguard import Guard
        Guard().engine            # logs "engine created" at debug level
        print("--enabled--")
        logger.enable("riskguard")
        Guard().engine
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/tmp"
    ).stdout
    before, after = out.split("--enabled--")
    assert "riskguard" not in before
    assert "riskguard.guard|engine created for sqlite" in after
