"""The README's commands agree with the code: every ``ray-sbir`` command line in its code blocks names a real
subcommand and only options that subcommand takes, and the run folder the examples pass as ``--checkpoint``
is the one ``configs/demo.yaml`` trains into (``train.storage_path``/``train.name``)."""

from __future__ import annotations

import os
import re
import shlex

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands() -> list[list[str]]:
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    lines = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("ray-sbir "):
                lines.append(shlex.split(line))
    return lines


def options_of(parser) -> dict[str, set[str]]:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def test_readme_commands_use_real_subcommands_and_options():
    from ray_sbir.cli import build_parser

    options = options_of(build_parser())
    commands = readme_commands()
    assert len(commands) >= 6, commands
    for argv in commands:
        cmd = argv[1]
        assert cmd in options, f"README: `ray-sbir {cmd}` is not a subcommand ({sorted(options)})"
        for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
            assert flag in options[cmd], f"README: `ray-sbir {cmd}` has no option {flag}"


def test_readme_run_folder_is_the_demo_presets():
    from ray_sbir.config import load_config

    cfg = load_config(os.path.join(REPO, "configs", "demo.yaml"))
    run = f"{cfg.train.storage_path}/{cfg.train.name}"
    checkpoints = [argv[argv.index("--checkpoint") + 1] for argv in readme_commands() if "--checkpoint" in argv]
    assert checkpoints and all(c == run for c in checkpoints if not c.startswith(("s3://", "<", "$"))), checkpoints
