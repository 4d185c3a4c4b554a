"""The distill task end to end on a real local Ray cluster: a teacher trained with Ray Train, its photo index
embedded with Ray Data, a smaller student distilled with 2 Ray Train workers, and the student's sketch
embeddings searching the teacher's photo index."""

import numpy as np

from ray_sbir.checkpoint import load_model, read_meta
from ray_sbir.data.decode import render_spec
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.embed import UNTRAINED, ModelSource, embed_items
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.index import read_index
from ray_sbir.distributed.train import train
from tests.conftest import tiny_config

STUDENT = ["train.task=distill", "model.sketch.backbone=test_vit", "model.sketch.image_size=16",
           "loss.terms={distill_embedding: {weight: 1.0}, triplet: {weight: 0.2}}", "train.lr=0.003",
           "train.backbone_lr_mult=1.0"]


def test_distilled_student_searches_the_teachers_photo_index(ray_local, tiny_doodles, tmp_path):
    storage = str(tmp_path / "runs")
    teacher_cfg = tiny_config(tiny_doodles, storage, "train.name=teacher", "train.epochs=2", "data.unseen=random:3")
    plan = plan_dataset(teacher_cfg)
    teacher = train(teacher_cfg, plan).best_checkpoint
    unseen_photos = plan.items(plan.split.unseen, "photo")
    unseen_sketches = plan.items(plan.split.unseen, "sketch")
    photo_index = str(tmp_path / "teacher_photos")
    embed_items(unseen_photos, "photo", ModelSource(teacher), photo_index, render_spec(teacher_cfg, "photo"))

    student_cfg = tiny_config(tiny_doodles, storage, "train.name=student", "train.epochs=2", "train.num_workers=2",
                              "data.unseen=random:3", "data.triplets_per_epoch=160", f"distill.teacher={teacher}",
                              *STUDENT)
    result = train(student_cfg, plan)
    student = result.best_checkpoint
    meta = read_meta(student)
    assert meta.task == "distill" and meta.config.model.sketch.image_size == 16
    assert meta.config.model.photo.image_size == 32 and meta.config.model.embed_dim == 32  # the teacher's

    # The student checkpoint's photo side is the teacher's: embedding the photos with it gives the same index.
    again = str(tmp_path / "student_photos")
    embed_items(unseen_photos, "photo", ModelSource(student), again, render_spec(meta.config, "photo"))
    assert np.array_equal(read_index(again).embeddings, read_index(photo_index).embeddings)

    # Student sketch queries against the teacher's photo index: close to the teacher's own sketch embeddings
    # (cosine), far closer than an untrained student of the same architecture.
    def sketch_embeddings(source, cfg, name):
        out = str(tmp_path / name)
        embed_items(unseen_sketches, "sketch", source, out, render_spec(cfg, "sketch"))
        return read_index(out)

    t = sketch_embeddings(ModelSource(teacher), teacher_cfg, "teacher_queries")
    s = sketch_embeddings(ModelSource(student), meta.config, "student_queries")
    u = sketch_embeddings(ModelSource(UNTRAINED, meta.config.model), meta.config, "untrained_queries")
    assert list(s.ids) == list(t.ids) == list(u.ids)
    cos_student = float(np.mean(np.sum(s.embeddings * t.embeddings, axis=1)))
    cos_untrained = float(np.mean(np.sum(u.embeddings * t.embeddings, axis=1)))
    assert cos_student > 0.5 and cos_student > cos_untrained + 0.3, (cos_student, cos_untrained)
    g = read_index(photo_index)
    student_map = retrieval_metrics(s.embeddings, s.labels, g.embeddings, g.labels, ks=(10,), map_ks=(10,),
                                    recall_ks=(10,), normalize=False).map_all
    untrained_map = retrieval_metrics(u.embeddings, u.labels, g.embeddings, g.labels, ks=(10,), map_ks=(10,),
                                      recall_ks=(10,), normalize=False).map_all
    assert student_map > untrained_map, (student_map, untrained_map)
    model, _ = load_model(student)  # weights_only=True, no extra flags
    assert model.input_size("sketch") == 16
    from ray_sbir.serving import encode_sketches, load_sketch_encoder

    served, _, device = load_sketch_encoder(student, use_gpu=False, torch_threads=1)  # what a Serve replica loads
    emb = encode_sketches(served, np.full((2, 16, 16), 255, np.uint8), device)
    assert emb.shape == (2, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
