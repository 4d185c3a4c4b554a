"""Log lines carry their level; RAY_SBIR_LOG_FORMAT=json gives one JSON object per line."""

import json
import os
import subprocess
import sys

SNIPPET = ("import logging\nfrom ray_sbir.logs import setup_logging\nsetup_logging(False)\n"
           "logging.getLogger('ray_sbir.test').warning('disk %s full', 'x')\n")


def _stderr(**env) -> str:
    proc = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.strip()


def test_lines_carry_their_level():
    line = _stderr(RAY_SBIR_LOG_FORMAT="")
    assert line.startswith("[ray-sbir ") and " WARNING] disk x full" in line


def test_json_lines():
    record = json.loads(_stderr(RAY_SBIR_LOG_FORMAT="json"))
    assert record["level"] == "WARNING" and record["message"] == "disk x full" and record["logger"] == "ray_sbir.test"
    assert record["time"].endswith("+00:00")
