"""The rerank task without Ray: warm-up on random pairs, in-batch pairs after it, a frozen encoder, checkpoints
that load as their encoder and as a similarity scorer, and validation that re-ranks."""

import numpy as np
import pytest
import torch

from ray_sbir.checkpoint import CheckpointMeta, load_model, write_checkpoint
from ray_sbir.config import ConfigError, load_config
from ray_sbir.search import ExactShard, Reranked
from ray_sbir.search.rerank import load_similarity
from ray_sbir.training import TaskContext, create_task, task_class
from ray_sbir.training.rerank import random_pairs
from ray_sbir.training.step import Precision, make_optimizer, train_step
from tests.training.helpers import CLASSES, make_batch, make_teacher

RERANK = ["train.task=rerank", "loss.terms={similarity_regression: {weight: 1, margin: 0.2}}", "train.lr=0.003",
          "rerank.hidden=[32, 32]", "rerank.warmup=0.5", "rerank.warmup_pairs=64"]


def _task(tmp_path, *overrides):
    encoder = make_teacher(tmp_path)
    cfg = load_config(None, [*RERANK, f"rerank.encoder={encoder}", *overrides])
    cfg = task_class("rerank").prepare_config(cfg)
    torch.manual_seed(0)
    return create_task(cfg, TaskContext(CLASSES)).train(), cfg, encoder


def test_random_pairs_have_the_drawn_cosines():
    a, b, c = random_pairs(500, 16, torch.Generator().manual_seed(0))
    assert torch.allclose(a.norm(dim=1), torch.ones(500), atol=1e-5)
    assert torch.allclose(b.norm(dim=1), torch.ones(500), atol=1e-5)
    assert torch.allclose((a * b).sum(1), c, atol=1e-5)
    assert c.min() < -0.9 and c.max() > 0.9  # uniform over [-1, 1]


def test_rerank_config_needs_an_encoder_and_takes_its_model(tmp_path):
    with pytest.raises(ConfigError, match="needs rerank.encoder"):
        load_config(None, ["train.task=rerank"])
    with pytest.raises(ConfigError, match="rerank.head"):
        load_config(None, ["rerank.head=nope"])
    task, cfg, encoder = _task(tmp_path)
    assert cfg.model.embed_dim == 16 and cfg.model.photo.backbone == "test_vit"


def test_rerank_trains_the_head_only_warmup_then_batch_pairs(tmp_path):
    task, cfg, encoder_dir = _task(tmp_path)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    assert not any(p.requires_grad for p in task.model.parameters())
    assert not task.model.training  # frozen: BatchNorm statistics kept
    opt = make_optimizer(task, cfg)
    precision = Precision.for_device(torch.device("cpu"), amp=False)
    batch = make_batch({"sketch": 32, "positive": 48, "negative": 48})
    warm = [train_step(task, opt, precision, batch, 0.1)["similarity_regression"] for _ in range(100)]
    assert warm[-1] < warm[0] * 0.7  # learns to reproduce the cosine of random pairs
    pairs = [train_step(task, opt, precision, batch, 0.9)["similarity_regression"] for _ in range(30)]
    assert pairs[-1] < pairs[0]
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k]), f"encoder weight {k} changed"

    # The checkpoint loads as its encoder (embed / evaluate / serve) and as a similarity scorer.
    folder = str(tmp_path / "rerank_ckpt")
    write_checkpoint(folder, task.trainable_state(), CheckpointMeta(0, cfg, CLASSES, {}))
    model, meta = load_model(folder)
    encoder, _ = load_model(encoder_dir)
    x = torch.randn(2, 3, 32, 32)
    assert meta.task == "rerank" and torch.equal(model.encode(x, "sketch"), encoder.encode(x, "sketch"))
    scorer = load_similarity(folder)
    q, items = np.random.default_rng(0).normal(size=(2, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expect = task.similarity.eval()(torch.from_numpy(q[:1]).expand(16, -1), torch.from_numpy(items)).numpy()
    np.testing.assert_allclose(scorer.score(q[0], items), expect, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a rerank one"):
        load_similarity(encoder_dir)


def test_reranked_stage_reorders_only_the_first_candidates():
    class Dot:  # a scorer whose learned score is the negated inner product: reverses the top candidates
        def score_pairs(self, q, items):
            return -(q[:, None, :] * items).sum(-1)

    g = np.eye(6, dtype=np.float32)
    q = np.array([[6.0, 5, 4, 3, 2, 1]], np.float32)
    base = ExactShard(g, device="cpu")
    assert base.search(q, 6)[1].tolist() == [[0, 1, 2, 3, 4, 5]]
    assert Reranked(base, Dot(), 3).search(q, 6)[1].tolist() == [[2, 1, 0, 3, 4, 5]]
    assert Reranked(base, Dot(), 10).search(q, 6)[1].tolist() == [[5, 4, 3, 2, 1, 0]]
    scores, rows = Reranked(base, Dot(), 3).search(q, 2)  # k below the candidates: the best k of them
    assert rows.tolist() == [[2, 1]] and scores.tolist() == [[-4.0, -5.0]]


def test_rerank_validation_reports_first_stage_and_reranked_map(tmp_path):
    task, cfg, _ = _task(tmp_path, "rerank.candidates=5")
    rng = np.random.default_rng(0)

    def batches(n, size):
        return [{"image": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                 "label": np.array(["a", "b"] * (n // 2)), "error": [""] * n}]

    out = task.validate(batches(6, 32), batches(8, 48), torch.device("cpu"), cfg)
    assert {"val_map", "val_map_first_stage"} <= set(out) and 0 <= out["val_map"] <= 1
    assert task.similarity.training and not task.model.training  # back in training mode, encoder frozen
