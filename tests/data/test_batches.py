"""Batch samplers (``data.sampler``): the registry and its checks, PK draws, and the PK builder on generated
doodles (decoded and augmented as Ray Data runs it)."""

import numpy as np
import pyarrow as pa
import pytest

from ray_sbir.config import ConfigError, load_config
from ray_sbir.data.samplers import SAMPLERS, create_sampler, uniform_columns
from ray_sbir.data.samplers.pk import PKDraw


def test_registry_and_config_checks():
    assert SAMPLERS.names() == ["pk", "triplet"]
    cfg = load_config(None, ["data.sampler={name: pk, items_per_class: 4}", "train.batch_size=32"])
    sampler = create_sampler(cfg)
    assert sampler.classes_per_batch == 8 and sampler.photo_inputs == ("positive",) and sampler.rows_per_task == 2
    assert create_sampler(load_config(None, [])).registered_name == "triplet"
    bad = [(["data.sampler={name: pq}"], "data.sampler.name: unknown batch sampler 'pq'; registered: pk, triplet"),
           (["data.sampler={name: pk, items_per_class: 5}", "train.batch_size=32"],
            "data.sampler.items_per_class: train.batch_size \\(32\\) must be a multiple of it"),
           (["data.sampler={name: pk, items_per_class: 16}", "train.batch_size=16"], "at least 2 classes per batch"),
           (["data.sampler={name: pk, items_per_class: 0}"], "data.sampler.items_per_class: must be >= 1"),
           (["data.sampler={name: pk, per_class: 4}"], "unknown config key 'data.sampler.per_class'"),
           (["data.sampler=pk"], "data.sampler: expected a mapping"),
           (["data.sampler={name: pk}", "train.task=distill", "distill.teacher=x"],
            "data.sampler.name: train.task=distill trains on triplet batches, got 'pk'")]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)


def test_pk_draw_holds_p_classes_by_k_without_repeats():
    sketch_labels = np.repeat(np.arange(6), 5)  # 6 classes x 5 sketches
    photo_labels = np.concatenate([np.repeat(np.arange(6), 4), [5, 5]])
    draw = PKDraw(sketch_labels, photo_labels, num_classes=6, classes_per_batch=4, items_per_class=3)
    seen = set()
    for seed in range(20):
        sketches, photos, labels = draw(seed)
        assert len(sketches) == len(photos) == len(labels) == 12
        classes = labels.reshape(4, 3)
        assert (classes == classes[:, :1]).all() and len(set(classes[:, 0])) == 4  # 4 distinct classes, 3 each
        assert (sketch_labels[sketches] == labels).all() and (photo_labels[photos] == labels).all()
        assert len(set(sketches)) == 12 and len(set(photos)) == 12  # no sketch or photo twice
        seen.add(tuple(sketches))
        again = draw(seed)
        assert all(np.array_equal(a, b) for a, b in zip(again, (sketches, photos, labels)))  # a seed is a batch
    assert len(seen) == 20
    # A class with fewer than K photos repeats its photos (and only then).
    few = PKDraw(sketch_labels[:10], np.array([0, 1, 1, 1]), num_classes=2, classes_per_batch=2, items_per_class=3)
    _, photos, labels = few(0)
    assert (photos[labels == 0] == 0).all()
    with pytest.raises(ValueError, match="PK batches of 4 classes need at least 4 training classes"):
        PKDraw(np.repeat(np.arange(3), 4), np.repeat(np.arange(3), 4), 3, 4, 2)


def test_pk_builder_decodes_whole_batches_in_order(tmp_path):
    from ray_sbir.data.doodles import DOODLE_CLASSES, make_doodles
    from ray_sbir.data.plan import plan_dataset
    from ray_sbir.training import task_class

    root = str(tmp_path / "doodles")
    make_doodles(root, sketches_per_class=4, photos_per_class=3, photo_size=32, classes=DOODLE_CLASSES[:6])
    cfg = load_config(None, [f"data.root={root}", "data.unseen=random:1", "data.val_classes=1",
                             "model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "train.batch_size=8",
                             "data.sampler={name: pk, items_per_class: 2}"])
    plan = plan_dataset(cfg)
    classes = plan.split.train
    index = {c: i for i, c in enumerate(classes)}
    anchors = plan.items(classes, "sketch").items
    anchors = anchors.append_column("label_idx", pa.array([index[c] for c in anchors["label"].to_pylist()], pa.int64()))
    photos = plan.items(classes, "photo").items
    photo_labels = np.array([index[c] for c in photos["label"].to_pylist()])
    inputs = task_class("doodle2search").inputs(cfg)
    assert inputs.image_names == ["sketch", "positive"] and inputs.label_names == ("label",)
    sampler = create_sampler(cfg)
    builder = sampler.builder(anchors, photos["uri"].to_pylist(), photo_labels, len(classes), inputs.sketches,
                              inputs.photo_spec, augment=True)
    rows = sampler.rows(anchors, 40, seed=0)
    assert rows.num_rows == 5 and not sampler.shuffle_rows  # one row per batch of 8
    batch = builder({**rows.slice(0, 2).to_pydict(), **uniform_columns(sampler, np.random.default_rng(0), 2)})
    assert batch["sketch"].shape == (16, 32, 32) and batch["positive"].shape == (16, 32, 32, 3)
    for labels in batch["label"].reshape(2, 8):  # two whole batches, each 4 classes x 2
        pairs = labels.reshape(4, 2)
        assert (pairs[:, 0] == pairs[:, 1]).all() and len(set(pairs[:, 0])) == 4
    # The same uniforms give the same batch, augmentation included.
    again = builder({**rows.slice(0, 2).to_pydict(), **uniform_columns(sampler, np.random.default_rng(0), 2)})
    assert np.array_equal(batch["positive"], again["positive"]) and np.array_equal(batch["sketch"], again["sketch"])
