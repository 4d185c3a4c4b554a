"""Every config value is checked when the config is loaded, before any Ray cluster starts: each bad value is one
sentence naming the key (and, for registered names, what is registered), and the CLI exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ray_sbir.cli import main
from ray_sbir.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.yaml")

# (override, what the one-line message must say)
BAD_VALUES = [
    ("model.name=bogus", "model.name: unknown model 'bogus'; registered: dual_encoder, hash_dual_encoder"),
    ("model.sketch.backbone=efficientnet_lite9", "model.sketch.backbone: 'efficientnet_lite9' is not a timm model"),
    ("data.layout=bogus", "data.layout: unknown dataset layout 'bogus'; registered: auto,"),
    ("data.unseen=bogus_split", "data.unseen: 'bogus_split' is neither a named split (sketchy_unseen21"),
    ("data.root=/nonexistent", "data.root: folder not found: /nonexistent"),
    ("train.num_workers=0", "train.num_workers: must be >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("train.epochs=-1", "train.epochs: must be >= 1, got -1"),
    ("train.lr=-1", "train.lr: must be > 0, got -1.0"),
    ("eval.ks=[]", "eval.ks: give at least one cut-off k"),
    # one per registry
    ("train.task=bogus", "train.task: unknown training task 'bogus'; registered: distill, doodle2search, rerank"),
    ("loss.terms={bogus: {weight: 1}}", "loss.terms.bogus: unknown loss term 'bogus'; registered: contrastive, distill_embedding"),
    ("rerank.head=bogus", "rerank.head: unknown similarity head 'bogus'; registered: linear, mlp"),
    ("model.sketch.pretrained_weights=/nope.pt", "model.sketch.pretrained_weights: no file /nope.pt"),
    ("model.sketch.pool=bogus", "model.sketch.pool: unknown pooling 'bogus'; registered: attention, mean, token"),
    ("model.name=hash_dual_encoder", "model.normalize: hash_dual_encoder needs tanh (the relaxed code), got 'l2'"),
    ("distill.teacher=/nope", None),  # only checked with train.task=distill: see below
]


@pytest.fixture()
def dataset_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "unseen_classes.txt").write_text("cat\n")
    (root / "class_vectors.txt").write_text("cat 0.1 0.2\n")
    return str(root)


@pytest.mark.parametrize("override,message", [b for b in BAD_VALUES if b[1]], ids=[b[0] for b in BAD_VALUES if b[1]])
def test_each_bad_value_exits_2_with_one_sentence_before_ray(override, message, dataset_root, capsys):
    import ray

    before = ray.is_initialized()  # the test session's shared cluster may be up: nothing may start or join one
    code = main(["train", "--config", TINY, "--set", f"data.root={dataset_root}", "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err, err
    assert len(err.splitlines()) == 1, err
    assert ray.is_initialized() == before  # nothing started


def test_checkpoints_a_task_reads_must_exist(dataset_root):
    with pytest.raises(ConfigError, match="distill.teacher: no checkpoint at /nope"):
        load_config(TINY, [f"data.root={dataset_root}", "train.task=distill", "distill.teacher=/nope"],
                    check_paths=True)
    from ray_sbir.training.tasks import check_training_inputs

    os.remove(os.path.join(dataset_root, "class_vectors.txt"))
    with pytest.raises(ConfigError, match="data.word_vectors: the semantic loss term needs class word vectors"):
        check_training_inputs(load_config(TINY, [f"data.root={dataset_root}"], check_paths=True))
    check_training_inputs(load_config(TINY, [f"data.root={dataset_root}", "loss.terms.semantic.weight=0"]))
    # every term that reads class vectors is named, with the settings that turn it off
    both = load_config(TINY, [f"data.root={dataset_root}", "loss.terms.knowledge={weight: 1, semantic_weight: 0.3}"])
    with pytest.raises(ConfigError, match="the semantic and knowledge loss terms need class word vectors .* turn "
                                          "them off \(loss.terms.semantic.weight=0, loss.terms.knowledge.weight=0\)"):
        check_training_inputs(both)
    # without check_paths (a config read back from a checkpoint, the demo before it writes its data) names and
    # values are still checked, paths are not
    assert load_config(TINY, ["data.root=/nonexistent"]).data.root == "/nonexistent"
    with pytest.raises(ConfigError, match="model.name"):
        load_config(TINY, ["model.name=bogus"])


def test_the_cli_answers_in_seconds():
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ray_sbir.cli", "train", "--config", TINY, "--set",
                           "data.root=/nonexistent"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("data.root: folder not found: /nonexistent")
    assert time.monotonic() - t0 < 30


def test_every_registry_speaks_the_same_way():
    """One helper behind every registry: the same error (key, kind, what is registered) and listing."""
    from ray_sbir.data.layouts import LAYOUTS
    from ray_sbir.losses.registry import TERMS
    from ray_sbir.models.encoders import POOLS
    from ray_sbir.models.registry import MODELS
    from ray_sbir.models.similarity import SIMILARITY_HEADS
    from ray_sbir.search import STAGES
    from ray_sbir.training.tasks import TASKS

    for registry, builtin in ((MODELS, "dual_encoder"), (TERMS, "triplet"), (TASKS, "doodle2search"),
                              (SIMILARITY_HEADS, "mlp"), (STAGES, "rerank"), (LAYOUTS, "sketchy"), (POOLS, "attention")):
        assert builtin in registry.names() and registry.get(builtin) is not None
        with pytest.raises(ConfigError, match=rf"^{registry.key}: unknown {registry.kind} 'nope'; registered: "):
            registry.get("nope")


@pytest.mark.parametrize("preset", sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".yaml")))
def test_every_shipped_preset_passes_the_checks(preset):
    """The presets in ``configs/`` load with every check (a preset that drifted from the schema, or names packaged
    weights of another backbone, fails here rather than in a user's first run)."""
    given = {"distill.yaml": ["distill.teacher=runs/demo"], "rerank.yaml": ["rerank.encoder=runs/demo"]}  # the user's
    cfg = load_config(os.path.join(REPO, "configs", preset), given.get(preset, []))
    assert cfg.train.name and cfg.model.embed_dim > 0
