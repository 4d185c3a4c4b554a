"""The config reference is generated from the typed config (``ray_sbir.config_docs``): every key has a one-line
doc, ``ray-sbir config`` prints a run's effective config that loads back as the same config, and docs/config.md
is what ``ray-sbir config --markdown`` prints (regenerate it with that command when this test fails)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import yaml

from ray_sbir.config import config_from_dict, load_config
from ray_sbir.config_docs import config_keys, markdown_reference, yaml_with_docs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_key_has_a_doc():
    missing = [key for key, _, doc, _ in config_keys() if not doc]
    assert not missing, f"document these fields in ray_sbir/config.py (a comment above each): {missing}"


@pytest.mark.parametrize("preset", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))),
                         ids=lambda p: os.path.basename(p))
def test_effective_config_loads_back_as_itself(preset):
    # (the distill and rerank presets name their teacher / encoder checkpoint on the command line)
    cfg = load_config(preset, ["train.epochs=7", "distill.teacher=runs/t", "rerank.encoder=runs/e"])
    text = yaml_with_docs(cfg)
    assert config_from_dict(yaml.safe_load(text)) == cfg
    assert "  # Passes over the training data" in text and "  epochs: 7\n" in text


def test_docs_config_md_is_generated_from_the_code():
    with open(os.path.join(REPO, "docs", "config.md"), encoding="utf-8") as f:
        assert f.read() == markdown_reference(), "docs/config.md is stale: ray-sbir config --markdown > docs/config.md"


def test_cli_config_prints_the_effective_config_and_checks_it():
    run = lambda *a: subprocess.run([sys.executable, "-m", "ray_sbir.cli", "config", *a], capture_output=True,
                                    text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    ok = run("--config", "configs/tiny.yaml", "--set", "train.lr=0.01")
    assert ok.returncode == 0 and config_from_dict(yaml.safe_load(ok.stdout)).train.lr == 0.01, ok.stderr
    bad = run("--set", "train.epochs=0")
    assert bad.returncode == 2 and bad.stderr.strip() == "ray-sbir: error: train.epochs: must be >= 1, got 0"
