"""scripts/install.sh decides where to install and whether to keep torch before it changes anything: ``--plan``
prints those decisions. The README's two commands enter the environment it installed into."""

from __future__ import annotations

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "install.sh")


def plan(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    return subprocess.run(["bash", SCRIPT, "--plan", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **env})


def test_without_an_active_environment_it_installs_into_dot_venv():
    proc = plan()
    assert proc.returncode == 0, proc.stderr
    assert ".venv" in proc.stdout and "active environment" not in proc.stdout
    assert "-m pip install -q -e .[pretrained]" in proc.stdout
    assert "/.venv/bin/python -m pip install" in proc.stdout  # never the interpreter's own site-packages


def test_an_active_environment_is_used_and_its_torch_kept(tmp_path):
    proc = plan("--dev", "--extras", "gcs", VIRTUAL_ENV=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"installing into the active environment {tmp_path}" in proc.stdout
    # this interpreter's torch satisfies pyproject.toml's range: no pinned torch replaces it
    assert "keeping the installed torch" in proc.stdout and "torch==" not in proc.stdout
    assert "-e .[pretrained,dev,lite1,lite2,gcs]" in proc.stdout
    assert not (tmp_path / "bin").exists()  # --plan changes nothing


def test_bad_options_are_one_sentence_and_exit_2():
    proc = plan("--bogus")
    assert proc.returncode == 2 and "unknown option '--bogus'" in proc.stderr
    proc = plan("--extras")
    assert proc.returncode == 2 and "--extras needs a value" in proc.stderr


def test_readme_commands_enter_the_installed_environment():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    for marker in ("<!-- demo-command -->", "<!-- test-command -->"):
        command = text.split(marker)[1].split("```bash\n")[1].splitlines()[0]
        assert command.startswith("bash scripts/install.sh") and "&& . .venv/bin/activate &&" in command, command
