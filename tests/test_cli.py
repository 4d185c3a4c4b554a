"""The `ray-sbir` command line, run as a user runs it (subprocesses)."""

import glob
import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_CONFIG


def _run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ray_sbir.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("cmd", ["make-doodles", "train", "embed", "evaluate", "demo", "index-quickdraw", "augment",
                                 "cluster-env"])
def test_every_subcommand_has_help(cmd):
    r = _run(cmd, "--help")
    assert r.returncode == 0 and "usage: ray-sbir " + cmd in r.stdout
    assert len(r.stdout.splitlines()) > 4


def test_config_errors_exit_2_with_message():
    r = _run("train", "--config", TINY_CONFIG, "--set", "train.epoch=3")
    assert r.returncode == 2
    assert "unknown config key 'train.epoch'" in r.stderr and "epochs" in r.stderr


def test_file_errors_are_one_sentence_naming_the_file(tmp_path, capsys):
    """Bad files a user points at: one line, exit 2, the file named (no traceback)."""
    from ray_sbir.cli import main

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: {epochs: [1\n")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "meta.json").write_text("{not json")
    root = tmp_path / "data"
    root.mkdir()
    (root / "unseen_classes.txt").write_text("cat\n")
    cases = [
        (["train", "--config", str(bad_yaml)], f"config file {bad_yaml} is not valid YAML (line 2, column 1)"),
        (["embed", "--config", TINY_CONFIG, "--set", f"data.root={root}", "--checkpoint", str(checkpoint), "--out",
          str(tmp_path / "index")], f"{checkpoint}/meta.json is not valid JSON"),
        (["make-doodles", "--out", "/dev/null/x"], "--out /dev/null/x: cannot write there (Not a directory)"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_a_bad_dataset_is_one_sentence_before_ray(tmp_path):
    """``embed`` / ``evaluate`` plan the dataset before Ray starts: a root with no recognisable layout is one line
    naming it, and nothing else on stderr (it used to surface as a traceback after the cluster had started, whose
    start-up lines would show here)."""
    import torch

    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.models import create_model

    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=32"])
    torch.manual_seed(0)
    checkpoint = str(tmp_path / "ckpt")
    write_checkpoint(checkpoint, {"model": create_model(cfg.model).state_dict()},
                     CheckpointMeta(epoch=1, config=cfg, classes=["a"], metrics={}))
    root = tmp_path / "data"
    root.mkdir()
    (root / "unseen_classes.txt").write_text("cat\n")
    for command in ("embed", "evaluate"):
        r = _run(command, "--config", TINY_CONFIG, "--set", f"data.root={root}", "--checkpoint", checkpoint,
                 "--out", str(tmp_path / "out"))
        err = r.stderr.strip()
        assert r.returncode == 2 and f"cannot detect the layout of {root}" in err, err
        assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists(), err


def test_index_quickdraw_checks_its_inputs_before_ray(tmp_path, capsys):
    import ray

    from ray_sbir.cli import main

    before = ray.is_initialized()
    fixtures = os.path.join(REPO, "tests", "fixtures", "quickdraw")
    cases = [
        (["--prefix", fixtures, "--checkpoint", str(tmp_path / "nope")], f"no meta.json): {tmp_path / 'nope'}"),
        (["--prefix", str(tmp_path), "--checkpoint", "x", "--concurrency", "0"], "--concurrency must be >= 1, got 0"),
    ]
    for argv, message in cases:
        assert main(["index-quickdraw", *argv, "--out", str(tmp_path / "index")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert ray.is_initialized() == before


def test_augment_checks_its_inputs_before_ray(tmp_path, capsys):
    import ray

    from ray_sbir.cli import main

    before = ray.is_initialized()
    (tmp_path / "empty").mkdir()
    cases = [
        (["--index", str(tmp_path / "nope")], f"--index {tmp_path / 'nope'}: no such index folder"),
        (["--index", str(tmp_path / "empty"), "--n", "0"], "--n must be >= 1"),
        (["--index", str(tmp_path / "empty"), "--alpha", "-1"], "alpha must be a number >= 0, got -1.0"),
    ]
    for argv, message in cases:
        assert main(["augment", *argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert ray.is_initialized() == before


def test_embed_append_checks_its_inputs_before_ray(tmp_path, capsys, tiny_doodles):
    import ray

    from ray_sbir.cli import main
    from ray_sbir.index import write_index

    before = ray.is_initialized()
    base = str(tmp_path / "v1")
    write_index(base, ["a"], [[1.0, 0.0]])
    common = ["embed", "--config", TINY_CONFIG, "--set", f"data.root={tiny_doodles}", "--checkpoint", "untrained"]
    cases = [
        (["--out", str(tmp_path / "v2"), "--remove-ids", str(tmp_path / "ids.txt")], "--remove-ids needs --append-to"),
        (["--out", base, "--append-to", base], "--out must be another folder than --append-to"),
        (["--out", str(tmp_path / "v2"), "--append-to", str(tmp_path / "nope")], str(tmp_path / "nope")),
        (["--out", str(tmp_path / "v2"), "--append-to", base, "--remove-ids", str(tmp_path / "ids.txt")],
         str(tmp_path / "ids.txt")),
    ]
    for argv, message in cases:
        assert main([*common, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert ray.is_initialized() == before


def test_embed_an_unlabelled_photo_folder(tmp_path):
    """`data.unseen: none` and the `photos` layout: a folder of photos nobody labelled becomes an index."""
    import numpy as np
    from PIL import Image

    from ray_sbir.index import read_index

    root = tmp_path / "library"
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png", "shelf/c.png", "shelf/d.jpeg", "e.webp"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name)
    base = ["--config", TINY_CONFIG, "--set", f"data.root={root}", "--set", "data.unseen=none",
            "--set", "loss.terms.semantic.weight=0", "--checkpoint", "untrained"]
    refused = _run("embed", *base, "--out", str(tmp_path / "x"))  # --classes unseen, the default
    assert refused.returncode == 2 and "data.unseen: none" in refused.stderr and "--classes all" in refused.stderr
    r = _run("embed", *base, "--classes", "all", "--out", str(tmp_path / "index"), "--num-cpus", "2", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout[r.stdout.index("{"):])["count"] == 5
    index = read_index(str(tmp_path / "index"))
    assert sorted(index.ids) == ["a.jpg", "b.png", "e.webp", "shelf/c.png", "shelf/d.jpeg"]
    assert set(index.labels) == {""} and index.embeddings.shape[0] == 5
    ev = _run("evaluate", *base, "--out", str(tmp_path / "eval"))
    assert ev.returncode == 2 and "data.unseen: none" in ev.stderr


# Every training plugin on the demo's path through Ray: PK batches, the in-batch terms, the knowledge term (on a
# shared backbone, with its semantic adjustment from the doodles' class vectors) and the terms that read negatives
# (each sketch's in-batch negative).
IN_BATCH_TRAINING = ["--set", "data.sampler={name: pk, items_per_class: 2}", "--set", "model.share_backbone=true",
                     "--set", "loss.terms={contrastive: {weight: 1}, triplet: {weight: 1, mining: batch_hard}, "
                              "knowledge: {weight: 0.5, semantic_weight: 1.0}, domain: {weight: 0.5}, "
                              "semantic: {weight: 0.5}}"]


def test_demo_end_to_end_tiny(tmp_path):
    """The README's demo path on a tiny config: own local Ray cluster, generate, train, embed, evaluate."""
    out = str(tmp_path / "demo")
    r = _run("demo", "--config", TINY_CONFIG, "--out", out, "--sketches-per-class", "6", "--photos-per-class", "6",
             "--set", "train.epochs=1", "--set", "search.dba_n=2", "--set", "search.query_expansion_n=3",
             *IN_BATCH_TRAINING, "--num-cpus", "3", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    checkpoint = sorted(glob.glob(os.path.join(out, "runs", "tiny", "checkpoint_epoch_*")))[-1]
    metrics = json.load(open(os.path.join(checkpoint, "meta.json")))["metrics"]
    for term in ("contrastive", "triplet", "knowledge", "domain", "semantic"):
        assert math.isfinite(metrics[f"train_{term}"]), metrics
    # With DBA on, the evaluated gallery is the augmented version (raw embeddings kept beside it), and its
    # manifest says how to search it: what `ray-sbir serve` on this index applies.
    gallery = os.path.join(out, "eval", "trained", "index", "gallery")
    manifest = json.load(open(os.path.join(gallery, "_manifest.json")))
    assert manifest["search"] == {"query_expansion": {"n": 3, "alpha": 3.0}, "dba": {"n": 2, "alpha": 3.0}}
    assert manifest["augmented_from"] == gallery + "_raw" and os.path.isfile(gallery + "_raw/_manifest.json")
    assert "untrained encoder" in r.stdout and "trained (Doodle to Search)" in r.stdout
    summary = json.load(open(os.path.join(out, "demo_summary.json")))
    assert set(summary["table"]) == {"untrained encoder", "trained (Doodle to Search)"}
    for key in ("retrieval_grid_trained", "retrieval_grid_untrained", "pr_curve"):
        assert os.path.getsize(summary[key]) > 1000
    assert os.path.isfile(os.path.join(out, "runs", "tiny", "config.yaml"))
    assert os.path.getsize(os.path.join(out, "runs", "tiny", "training_curves.png")) > 1000
    # Library lines go through logging, each once; Ray's own noise stays out of a normal run.
    log = r.stdout + r.stderr
    assert len(re.findall(r"\[ray-sbir [\d:]+ INFO\] epoch 1/1 done in", log)) == 1, log[-3000:]
    assert len(re.findall(r"\[ray-sbir [\d:]+ INFO\] evaluating the trained model", log)) == 1
    for noise in ("Failed to query Ray Train Controller", "DeprecationWarning", "Reporting training result",
                  "Started a local Ray instance", "PreemptionWatcher", "generated new fontManager"):
        assert noise not in log, noise


def test_verbose_shows_rays_own_lines(tmp_path):
    """``-v`` lets Ray's own lines through (the tiny demo test checks they are hidden without it); an embedding
    run is the cheapest command that starts a cluster (a training run took 60 s for the same check)."""
    root = str(tmp_path / "doodles")
    assert _run("make-doodles", "--out", root, "--sketches-per-class", "4", "--photos-per-class", "4").returncode == 0
    r = _run("embed", "-v", "--config", TINY_CONFIG, "--set", f"data.root={root}", "--set", "data.unseen=random:2",
             "--checkpoint", "untrained", "--out", str(tmp_path / "index"), "--num-cpus", "3", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Started a local Ray instance" in r.stdout + r.stderr  # Ray's own INFO line, shown with -v