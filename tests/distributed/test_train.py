"""Ray Train + Ray Data training on a tiny generated set, on a real local Ray cluster."""

import json
import math
import time

import torch

from ray_sbir import fs
from ray_sbir.checkpoint import load_model, read_meta
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.train import train
from tests.conftest import tiny_config


def test_two_workers_train_checkpoint_and_resume(ray_local, tiny_doodles, tmp_path, capfd):
    storage = str(tmp_path / "runs")
    cfg = tiny_config(tiny_doodles, storage, "train.num_workers=2", "train.epochs=2", "train.name=two")
    plan = plan_dataset(cfg)
    assert set(plan.split.unseen).isdisjoint(plan.split.train + plan.split.val)
    result = train(cfg, plan)

    meta = read_meta(result.latest_checkpoint)
    assert meta.epoch == 1 and meta.classes == plan.split.train
    assert math.isfinite(meta.metrics["train_loss"]) and meta.metrics["steps"] >= 1
    assert 0.0 <= meta.metrics["val_map"] <= 1.0
    for term in ("train_triplet", "train_domain", "train_semantic"):
        assert term in meta.metrics
    # resolved config and split written beside the run
    assert "epochs: 2" in fs.read_text(fs.join(result.run_dir, "config.yaml"))
    assert json.loads(fs.read_text(fs.join(result.run_dir, "split.json")))["unseen"] == plan.split.unseen

    model, _ = load_model(result.best_checkpoint)
    torch.manual_seed(cfg.train.seed)
    from ray_sbir.models import create_model

    init = create_model(cfg.model)
    trained_w = model.encoder("sketch").head.weight
    assert not torch.allclose(trained_w, init.encoder("sketch").head.weight)  # training changed the weights
    # the two encoders diverge: separate weights, trained on different domains
    assert not torch.allclose(model.encoder("sketch").head.weight, model.encoder("photo").head.weight)

    # Same run name, more epochs: resumes after epoch 1 instead of starting over.
    capfd.readouterr()
    cfg.train.epochs = 3
    result2 = train(cfg, plan)
    # The worker's line reaches this process through Ray's log forwarding, asynchronously: wait for it.
    text, deadline = "", time.time() + 30
    while "resuming from checkpoint" not in text and time.time() < deadline:
        out = capfd.readouterr()
        text += out.out + out.err
        time.sleep(0.5)
    assert "resuming from checkpoint of epoch 1 -> starting epoch 2" in text
    assert read_meta(result2.latest_checkpoint).epoch == 2


def _doodles_with_bad_data(tiny_doodles, tmp_path):
    """A copy of the tiny set with a truncated photo, an empty photo and a malformed ndjson line, all in
    the training classes."""
    import shutil

    root = tmp_path / "doodles"
    shutil.copytree(tiny_doodles, root)
    cfg = tiny_config(str(root), str(tmp_path / "runs"))
    cls = plan_dataset(cfg).split.train[0]
    (root / "photo" / cls / "zz_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "photo" / cls / "zz_empty.png").write_bytes(b"")
    with open(root / "sketch" / f"{cls}.ndjson", "a") as f:
        f.write('{"word": "%s", "key_id": "broken", "drawing": [[[1, 2], [3]]\n' % cls)
    return str(root), cls


def test_bad_training_data_is_reported_and_left_out(ray_local, tiny_doodles, tmp_path):
    import pytest

    from ray_sbir.data.images import BadItemsError

    root, cls = _doodles_with_bad_data(tiny_doodles, tmp_path)
    cfg = tiny_config(root, str(tmp_path / "runs"), "train.epochs=1", "train.name=bad", "train.validate=false",
                      "data.triplets_per_epoch=64")
    plan = plan_dataset(cfg)
    good_photos = len(plan.items([cls], "photo")) - 2
    result = train(cfg, plan)
    report = json.loads(fs.read_text(fs.join(result.run_dir, "data_report.json")))
    bad_uris = sorted(b["uri"].rsplit("/", 1)[-1] for b in report["undecodable_items"])
    assert bad_uris == ["zz_empty.png", "zz_truncated.png"]
    assert any("empty file" in b["error"] for b in report["undecodable_items"])
    assert len(report["malformed_records"]) == 1 and f"{cls}.ndjson" in report["malformed_records"][0]
    assert report["skipped"] == 3 and report["items_checked"] >= good_photos
    assert read_meta(result.latest_checkpoint).epoch == 0  # the run itself went on

    strict = tiny_config(root, str(tmp_path / "runs"), "train.epochs=1", "train.name=strict", "data.strict=true")
    with pytest.raises(ValueError, match="ndjson"):  # malformed line: refused while cataloguing
        plan_dataset(strict)
    with pytest.raises(BadItemsError, match="zz_(empty|truncated).png"):  # undecodable: refused before training
        train(strict, plan)


def test_a_resumed_run_draws_new_triplets_not_epoch_zeros_again(ray_local, tiny_doodles, tmp_path):
    """Ray Data reseeds ``random()`` per execution, counted from zero in each driver: a run resumed by a new
    driver must not replay epoch 0's triplets (same anchors, other order, positives and negatives)."""
    import numpy as np

    from ray_sbir.data.decode import render_spec
    from ray_sbir.data.samplers import create_sampler
    from ray_sbir.distributed.datasets import training_dataset
    from ray_sbir.distributed.train import checkpointed_epochs

    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"))
    plan = plan_dataset(cfg)
    classes = plan.split.train
    anchors, photos = plan.items(classes, "sketch"), plan.items(classes, "photo")

    def first_epoch(start_epoch: int) -> dict:
        ds = training_dataset(create_sampler(cfg), anchors, photos, classes, {"sketch": render_spec(cfg, "sketch")},
                              render_spec(cfg, "photo"), seed=cfg.data.seed, augment=False,
                              items_per_epoch=len(anchors), start_epoch=start_epoch)
        rows = ds.take_all()
        return {"label": np.array([r["label"] for r in rows]),
                "negative": np.stack([r["negative"] for r in rows]),
                "sketch": np.stack([r["sketch"] for r in rows])}

    fresh, again, resumed = first_epoch(0), first_epoch(0), first_epoch(2)
    assert np.array_equal(fresh["sketch"], again["sketch"])  # a new driver's epoch 0 is reproducible...
    assert sorted(fresh["label"]) == sorted(resumed["label"])  # ...the same anchor multiset...
    assert not np.array_equal(fresh["negative"], resumed["negative"])  # ...drawn anew after a resume

    run_dir = tmp_path / "runs" / "r"
    assert checkpointed_epochs(str(run_dir)) == 0
    for name in ("checkpoint_epoch_0000", "checkpoint_epoch_0003", "checkpoint_epoch_0001", "other"):
        (run_dir / name).mkdir(parents=True)
    assert checkpointed_epochs(str(run_dir)) == 4


def test_pk_batches_reach_the_training_loop_whole(ray_local, tiny_doodles, tmp_path):
    """Through Ray Data, each fixed-size batch the training loop takes is one drawn PK batch: P classes x K
    sketches, each with a photo of its class, in order; the epochs differ."""
    import numpy as np

    from ray_sbir.data.samplers import create_sampler
    from ray_sbir.distributed.datasets import training_dataset
    from ray_sbir.training import task_class

    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"), "data.sampler={name: pk, items_per_class: 2}",
                      "train.batch_size=8")
    plan = plan_dataset(cfg)
    classes = plan.split.train
    inputs = task_class("doodle2search").inputs(cfg)
    ds = training_dataset(create_sampler(cfg), plan.items(classes, "sketch"), plan.items(classes, "photo"), classes,
                          inputs.sketches, inputs.photo_spec, seed=0, augment=True, items_per_epoch=48)
    epochs = []
    for _ in range(2):
        batches = list(ds.iter_torch_batches(batch_size=8, drop_last=True))
        assert len(batches) == 6
        for batch in batches:
            assert set(batch) >= {"sketch", "positive", "label"} and "negative" not in batch
            pairs = batch["label"].numpy().reshape(4, 2)
            assert (pairs[:, 0] == pairs[:, 1]).all() and len(set(pairs[:, 0])) == 4, pairs
        epochs.append(np.concatenate([b["label"].numpy() for b in batches]))
    assert not np.array_equal(*epochs)
