"""Training tasks without Ray: what a step computes, what it trains, what its checkpoint holds."""

import numpy as np
import pytest
import torch

from ray_sbir.checkpoint import CheckpointMeta, load_model, write_checkpoint
from ray_sbir.config import ConfigError, load_config
from ray_sbir.training import TaskContext, create_task, list_tasks, task_class
from ray_sbir.training.step import Precision, make_optimizer, train_step
from tests.training.helpers import CLASSES, TINY, make_batch, make_teacher


def _vectors():
    return np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)


def test_registry_lists_the_built_in_tasks():
    assert {"doodle2search", "distill"} <= set(list_tasks())
    with pytest.raises(ConfigError, match="train.task: unknown training task 'nope'; registered: "):
        task_class("nope")


def test_doodle2search_step_is_the_weighted_sum_of_its_terms():
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    task = create_task(cfg, TaskContext(CLASSES, _vectors())).train()
    batch = make_batch({"sketch": 32, "positive": 32, "negative": 32})
    torch.manual_seed(1)
    terms = task(batch, progress=0.5)
    assert {"loss", "triplet", "domain", "domain_accuracy", "semantic"} <= set(terms)
    assert terms["loss"].item() == pytest.approx(terms["triplet"].item() + 0.5 * terms["domain"].item()
                                                 + 0.5 * terms["semantic"].item(), rel=1e-5)
    # the task only composes the model interface and the loss: the same numbers by hand
    torch.manual_seed(1)
    s = task.model.encode(batch["sketch"], "sketch")
    p = task.model.encode(torch.cat([batch["positive"], batch["negative"]]), "photo")
    out = {"sketch": s, "positive": p[:6], "negative": p[6:], "label": batch["label"],
           "negative_label": batch["negative_label"]}
    assert task.criterion(out, 0.5)["loss"].item() == pytest.approx(terms["loss"].item(), rel=1e-5)


def test_a_term_the_task_cannot_feed_is_a_config_error():
    cfg = load_config(None, [*TINY, "loss.terms={triplet: {weight: 1}, distill_embedding: {weight: 1}}"])
    with pytest.raises(ConfigError, match=r"need \['teacher_sketch'\], which task 'doodle2search' does not"):
        create_task(cfg, TaskContext(CLASSES))


def test_train_step_updates_weights_and_lowers_the_loss():
    cfg = load_config(None, [*TINY, "loss.terms={triplet: {weight: 1, margin: 0.5}}", "train.lr=0.003"])
    torch.manual_seed(0)
    task = create_task(cfg, TaskContext(CLASSES)).train()
    opt = make_optimizer(task, cfg)
    assert [g["base_lr"] for g in opt.param_groups] == [0.003, 0.003]
    precision = Precision.for_device(torch.device("cpu"), amp=True)
    assert not precision.enabled  # AMP is for CUDA only
    batch = make_batch({"sketch": 32, "positive": 32, "negative": 32})
    before = task.model.encoder("sketch").head.weight.detach().clone()
    losses = [train_step(task, opt, precision, batch, progress=i / 10)["loss"] for i in range(8)]
    assert not torch.equal(before, task.model.encoder("sketch").head.weight)
    assert losses[-1] < losses[0]


def test_distill_config_takes_the_teachers_photo_side(tmp_path):
    teacher = make_teacher(tmp_path)
    cfg = load_config(None, ["train.task=distill", f"distill.teacher={teacher}", "model.embed_dim=99",
                             "model.sketch.backbone=test_vit", "model.sketch.image_size=16",
                             "loss.terms={distill_embedding: {weight: 1}}"])
    cls = task_class("distill")
    resolved = cls.prepare_config(cfg)
    assert resolved.model.embed_dim == 16 and resolved.model.normalize == "batchnorm_l2"
    assert resolved.model.photo.backbone == "test_vit" and resolved.model.photo.image_size == 48
    assert resolved.model.sketch.backbone == "test_vit" and resolved.model.sketch.image_size == 16
    inputs = cls.inputs(resolved)
    assert {k: v.size for k, v in inputs.sketches.items()} == {"sketch": 16, "teacher_sketch": 32}
    assert inputs.photo_spec is None  # no term reads photos: none are decoded
    with_triplet = load_config(None, ["train.task=distill", f"distill.teacher={teacher}",
                                      "loss.terms={distill_embedding: {weight: 1}, triplet: {weight: 1}}"])
    assert cls.inputs(cls.prepare_config(with_triplet)).photo_spec.size == 48
    with pytest.raises(ConfigError, match="needs distill.teacher"):
        load_config(None, ["train.task=distill"])


def test_distill_trains_the_student_onto_the_teacher_and_keeps_the_photo_side(tmp_path):
    teacher_dir = make_teacher(tmp_path)
    teacher, _ = load_model(teacher_dir)
    cfg = load_config(None, ["train.task=distill", f"distill.teacher={teacher_dir}", "train.lr=0.003",
                             "model.sketch.backbone=test_vit", "model.sketch.image_size=16",
                             "loss.terms={distill_embedding: {weight: 1}, triplet: {weight: 0.5}}"])
    cls = task_class("distill")
    cfg = cls.prepare_config(cfg)
    torch.manual_seed(0)
    task = create_task(cfg, TaskContext(CLASSES)).train()
    photo = task.model.encoder("photo")
    assert not photo.training and not any(p.requires_grad for p in photo.parameters())
    assert not any(p.requires_grad for p in task.teacher.parameters())
    opt = make_optimizer(task, cfg)
    precision = Precision.for_device(torch.device("cpu"), amp=False)
    batch = make_batch({"sketch": 16, "teacher_sketch": 32, "positive": 48, "negative": 48})
    history = [train_step(task, opt, precision, batch, i / 20) for i in range(12)]
    assert history[-1]["distill_embedding"] < history[0]["distill_embedding"]
    assert set(history[0]) == {"loss", "distill_embedding", "triplet"}

    # The checkpoint of a distill run loads like any other, and its photo side is the teacher's, bit for bit.
    folder = str(tmp_path / "student")
    write_checkpoint(folder, task.trainable_state(), CheckpointMeta(0, cfg, CLASSES, {}))
    student, meta = load_model(folder)
    assert meta.task == "distill"
    x = torch.randn(3, 3, 48, 48)
    assert torch.equal(student.encode(x, "photo"), teacher.encode(x, "photo"))
    assert student.input_size("sketch") == 16 and student.embed_dim == teacher.embed_dim


def test_a_teacher_initialised_student_starts_as_the_teacher_and_searches_its_photo_index(tmp_path):
    """``distill.init: teacher``: the student (the teacher's backbone at a smaller input) starts with every
    tensor of the teacher's sketch encoder, so before any step it already ranks the teacher's photo index as
    the teacher does at the same input size."""
    from ray_sbir.search import EmbeddingKind, build_index

    teacher_dir = make_teacher(tmp_path)
    teacher, _ = load_model(teacher_dir)
    cfg = task_class("distill").prepare_config(load_config(None, [
        "train.task=distill", f"distill.teacher={teacher_dir}", "distill.init=teacher",
        "model.sketch.backbone=resnet10t", "model.sketch.image_size=24", "loss.terms={distill_embedding: {weight: 1}}"]))
    task = create_task(cfg, TaskContext(CLASSES)).eval()
    student = task.model.encoder("sketch").state_dict()
    assert all(torch.equal(v, student[k]) for k, v in teacher.encoder("sketch").state_dict().items())
    batch = make_batch({"photo": 48, "sketch": 32}, n=12)
    with torch.no_grad():
        gallery = teacher.encode(batch["photo"], "photo").numpy()  # the teacher's index
        ours = task.model.encode(batch["sketch"], "sketch").numpy()
        theirs = teacher.encode(batch["sketch"], "sketch").numpy()
    index = build_index(EmbeddingKind("float", gallery.shape[1]), gallery)
    assert index.search(ours, 5)[1].tolist() == index.search(theirs, 5)[1].tolist()
    scratch = cfg.__class__(**{**cfg.__dict__, "distill": cfg.distill.__class__(teacher_dir, "scratch")})
    torch.manual_seed(0)
    fresh = create_task(scratch, TaskContext(CLASSES)).model.encoder("sketch").state_dict()
    assert not all(torch.equal(v, fresh[k]) for k, v in teacher.encoder("sketch").state_dict().items())


def test_teacher_init_needs_a_student_sharing_the_teachers_backbone(tmp_path):
    teacher_dir = make_teacher(tmp_path)
    cfg = task_class("distill").prepare_config(load_config(None, [
        "train.task=distill", f"distill.teacher={teacher_dir}", "distill.init=teacher",
        "model.sketch.backbone=test_vit", "model.sketch.image_size=16", "loss.terms={distill_embedding: {weight: 1}}"]))
    with pytest.raises(ConfigError, match="shares no backbone tensor with the teacher"):
        create_task(cfg, TaskContext(CLASSES))
