"""The ``rerank`` task: a learned similarity (``rerank.head``) on a trained model's frozen embeddings.

The encoder checkpoint (``rerank.encoder``, any task) is loaded and frozen, in eval mode (its BatchNorm
statistics stay as trained); it is also what the checkpoint stores as ``model``, so ``embed``/``evaluate``
treat a rerank checkpoint as its encoder, and the head is stored beside it (``similarity``), which
:func:`ray_sbir.search.rerank.load_similarity` and ``ray-sbir serve --rerank`` read.

Pairs and targets (Garcia & Vogiatzis 2019; sources in :mod:`ray_sbir.losses.similarity`):

* warm-up (the first ``rerank.warmup`` of the training steps): ``rerank.warmup_pairs`` random pairs of unit
  vectors whose cosine is drawn uniformly in [-1, 1], target = the cosine (label 0): the head first learns to
  reproduce the cosine, so it starts from the metric it must improve on;
* then, from each batch of triplets, every (sketch, photo) pair of the batch: ``B`` sketches x ``2B`` photos
  (each triplet's positive and negative), label +1 where the classes match, else -1; the encoders run under
  ``no_grad``.

Validation re-ranks each held-out query's first ``rerank.candidates`` (by inner product) with the head and
reports the usual mAP / precision, so the best checkpoint is the best re-ranker.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ray_sbir.checkpoint import load_model, model_config_for_loading, read_meta
from ray_sbir.config import Config, ConfigError
from ray_sbir.models.similarity import create_similarity
from ray_sbir.training.tasks import Task, TaskContext, register_task


def random_pairs(n: int, dim: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` pairs of unit vectors ``(a, b, cos)`` with ``cos = a . b`` uniform in [-1, 1] (the warm-up data of
    the SimNet code's ``imdb_random_vectors.m``): ``b = c a + sqrt(1 - c^2) z`` with ``z`` a unit vector
    orthogonal to ``a``."""
    a = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
    z = torch.randn(n, dim, generator=generator)
    z = F.normalize(z - (z * a).sum(1, keepdim=True) * a, dim=1)
    c = torch.rand(n, generator=generator) * 2 - 1
    b = c[:, None] * a + (1 - c * c).clamp_min(0).sqrt()[:, None] * z
    return a.to(device), b.to(device), c.to(device)


def batch_pairs(sketches: torch.Tensor, photos: torch.Tensor, sketch_labels: torch.Tensor,
                photo_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (sketch, photo) pair of a batch: ``(a, b, cosine, label)`` with ``len(sketches) * len(photos)``
    rows, label +1 where the classes match, else -1."""
    nb, npho = len(sketches), len(photos)
    a = sketches[:, None, :].expand(nb, npho, -1).reshape(nb * npho, -1)
    b = photos[None, :, :].expand(nb, npho, -1).reshape(nb * npho, -1)
    label = torch.where(sketch_labels[:, None] == photo_labels[None, :], 1.0, -1.0).reshape(-1)
    return a, b, F.cosine_similarity(a, b, dim=-1), label


@register_task("rerank")
class RerankTask(Task):
    outputs = ("pair_score", "pair_cosine", "pair_label")

    input_checkpoints = ("rerank.encoder",)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if not cfg.rerank.encoder:
            raise ConfigError("train.task=rerank needs rerank.encoder: the checkpoint whose embeddings it re-scores")

    @classmethod
    def prepare_config(cls, cfg: Config) -> Config:
        # The encoder's model, as it was trained (and without weight sources: the checkpoint holds every weight).
        model = model_config_for_loading(read_meta(cfg.rerank.encoder).config)
        return dataclasses.replace(cfg, model=model)

    @classmethod
    def needs_class_vectors(cls, cfg: Config) -> bool:
        return False

    def __init__(self, cfg: Config, context: TaskContext):
        super().__init__()
        self.model, _ = load_model(cfg.rerank.encoder)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.options = cfg.rerank
        self.similarity = create_similarity(cfg.rerank.head, self.model.embed_dim, hidden=cfg.rerank.hidden,
                                            features=cfg.rerank.features)
        self.criterion = self.build_criterion(cfg, context)
        self.generator = torch.Generator().manual_seed(cfg.train.seed)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen encoder: BatchNorm statistics and dropout as at inference
        return self

    def forward(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        device = batch["sketch"].device
        if progress < self.options.warmup:
            a, b, cos = random_pairs(self.options.warmup_pairs, self.model.embed_dim, self.generator, device)
            label = torch.zeros_like(cos)
        else:
            with torch.no_grad():
                s = self.model.encode(batch["sketch"], "sketch").float()
                p = self.model.encode(torch.cat([batch["positive"], batch["negative"]]), "photo").float()
            a, b, cos, label = batch_pairs(s, p, batch["label"], torch.cat([batch["label"], batch["negative_label"]]))
        score = self.similarity(a, b)
        return self.criterion({"pair_score": score, "pair_cosine": cos, "pair_label": label}, progress)

    def parameter_groups(self, lr: float, backbone_lr_mult: float) -> list[dict]:
        params = [p for p in self.similarity.parameters()] + [p for p in self.criterion.parameters()
                                                              if p.requires_grad]
        return [{"params": params, "lr": lr, "base_lr": lr}]

    def trainable_state(self) -> dict:
        return {**super().trainable_state(), "similarity": self.similarity.state_dict()}

    def load_trainable_state(self, state: dict) -> None:
        super().load_trainable_state(state)
        self.similarity.load_state_dict(state["similarity"])

    def validate(self, sketch_batches, photo_batches, device: torch.device, cfg: Config) -> dict[str, float]:
        from ray_sbir.search import Reranked
        from ray_sbir.search.rerank import SimilarityScorer
        from ray_sbir.training.validation import embed_batches, gallery_index, retrieval_summary

        self.eval()
        q, ql = embed_batches(self.model, "sketch", sketch_batches, device)
        g, gl = embed_batches(self.model, "photo", photo_batches, device)
        scorer = SimilarityScorer(self.similarity, self.model.embed_dim, head=self.options.head, device=device)
        first_stage = gallery_index(self.model, g)
        out = retrieval_summary(q, ql, Reranked(first_stage, scorer, self.options.candidates), gl, cfg)
        first = retrieval_summary(q, ql, first_stage, gl, cfg)
        out["val_map_first_stage"] = first["val_map"]
        self.train()
        return out
