"""Validation during training: held-out classes embedded by the model being trained and ranked through
:mod:`ray_sbir.search` -- the index kind the model's embeddings make (:class:`~ray_sbir.search.EmbeddingKind`),
plus any stage the task adds -- so ``val_map`` measures the ranking ``evaluate`` and the endpoint will use."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ray_sbir.config import Config
from ray_sbir.data.images import to_model_input
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.models import RetrievalModel
from ray_sbir.models.inference import encode
from ray_sbir.search import EmbeddingKind, build_index

__all__ = ["embed_batches", "gallery_index", "retrieval_summary", "validation_metrics"]


@torch.no_grad()
def embed_batches(model: RetrievalModel, modality: str, batches: Iterable[dict],
                  device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Embed decoded-dataset batches (``image``, ``label``, ``error``); rows with a decode error are left out."""
    embs, labels = [], []
    for batch in batches:
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        if not ok.any():
            continue
        x = to_model_input(torch.from_numpy(np.ascontiguousarray(batch["image"][ok])), device)
        embs.append(encode(model, x, modality).float().cpu().numpy())  # in passes a CPU runs fastest
        labels.extend(np.asarray(batch["label"])[ok].tolist())
    if not embs:
        return np.zeros((0, model.embed_dim), np.float32), np.array([])
    return np.concatenate(embs), np.array(labels)


def gallery_index(model: RetrievalModel, gallery: np.ndarray):
    """The index search would build from the model's gallery embeddings (float or binary)."""
    return build_index(EmbeddingKind.of_model(model), gallery)


def validation_metrics(model: RetrievalModel, sketch_batches: Iterable[dict], photo_batches: Iterable[dict],
                       device: torch.device, cfg: Config) -> dict[str, float]:
    """Retrieval on held-out classes, ranked as search ranks them. Leaves the model in eval mode: the training
    loop puts its task back in train mode each epoch."""
    model.eval()
    q, ql = embed_batches(model, "sketch", sketch_batches, device)
    g, gl = embed_batches(model, "photo", photo_batches, device)
    return retrieval_summary(q, ql, gallery_index(model, g), gl, cfg)


def retrieval_summary(q: np.ndarray, ql, index, gl, cfg: Config) -> dict[str, float]:
    """``val_map``, ``val_map@K`` and ``val_precision@K`` of embedded held-out queries against ``index``."""
    val = retrieval_metrics(q, ql, None, gl, index=index, ks=tuple(cfg.eval.ks), map_ks=tuple(cfg.eval.map_ks),
                            chunk_size=cfg.eval.chunk_size)
    out = {"val_map": float(val.map_all)}
    out.update({f"val_map@{k}": float(v) for k, v in val.map_at.items()})
    out.update({f"val_precision@{k}": float(v) for k, v in val.precision_at.items()})
    return out
