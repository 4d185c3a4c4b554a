"""docs/data.md's sample errors are what the CLI prints today: each line of its ``checked-errors`` block comes
from one invocation, run here in a folder laid out as the text says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = ["--config", "configs/sketchy.yaml", "--set"]
INVOCATIONS = [  # in the block's order
    ["train", *S, "data.root=data/nope"],
    ["train", *S, "data.root=data/mine", "--set", "data.unseen=root"],
    ["train", *S, "data.root=data/mine", "--set", "data.layout=folders"],
    ["train", *S, "data.root=data/mine", "--set", "data.unseen=random:5", "--set",
     "data.word_vectors=data/mine/vectors.txt"],
    ["embed", *S, "data.root=data/mine", "--set", "data.unseen=random:5", "--checkpoint",
     "runs/mine/checkpoint_epoch_0007", "--out", "index/mine"],
]


def test_sample_errors_in_docs_data_md_are_todays(tmp_path):
    text = open(os.path.join(REPO, "docs", "data.md"), encoding="utf-8").read()
    block = re.search(r"<!-- checked-errors -->\n```\n(.*?)```", text, re.S).group(1).strip().splitlines()
    (tmp_path / "configs").mkdir()
    shutil.copy(os.path.join(REPO, "configs", "sketchy.yaml"), tmp_path / "configs")
    (tmp_path / "data" / "mine" / "cat").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "checkpoint_epoch_0007").mkdir(parents=True)
    assert len(block) == len(INVOCATIONS)
    for argv, expected in zip(INVOCATIONS, block):
        proc = subprocess.run([sys.executable, "-m", "ray_sbir.cli", *argv], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO})
        assert proc.returncode == 2 and proc.stderr.strip() == expected, (argv, proc.stderr)
