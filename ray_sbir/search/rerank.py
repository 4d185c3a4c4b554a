"""The learned re-ranker at search and evaluation time: a ``rerank`` checkpoint's similarity head
(:mod:`ray_sbir.models.similarity`) scoring a query against its first-stage candidates. Plain PyTorch.

The stage that uses it is :class:`ray_sbir.search.stages.Reranked`, offline and in the serving engine alike.
"""

from __future__ import annotations

import numpy as np
import torch

from ray_sbir.checkpoint import read_meta, read_state
from ray_sbir.models.similarity import create_similarity

__all__ = ["SimilarityScorer", "load_similarity"]


class SimilarityScorer:
    """A trained similarity head in eval mode: ``score(query (d,), items (m, d)) -> (m,)`` float32 NumPy."""

    def __init__(self, net: torch.nn.Module, embed_dim: int, *, head: str, checkpoint: str = "",
                 device: str | torch.device = "cpu"):
        self.net = net.to(device).eval()
        self.embed_dim, self.head, self.checkpoint = int(embed_dim), head, checkpoint
        self.device = torch.device(device)

    def describe(self) -> dict:
        return {"head": self.head, "embed_dim": self.embed_dim}

    @torch.inference_mode()
    def score(self, query: np.ndarray, items: np.ndarray) -> np.ndarray:
        q = torch.as_tensor(np.asarray(query, np.float32), device=self.device).reshape(1, -1)
        x = torch.as_tensor(np.asarray(items, np.float32), device=self.device)
        if x.ndim != 2 or x.shape[1] != self.embed_dim or q.shape[1] != self.embed_dim:
            raise ValueError(f"expected {self.embed_dim}-d query and items, got {tuple(q.shape)}, {tuple(x.shape)}")
        return self.net(q.expand(len(x), -1), x).float().cpu().numpy()

    @torch.inference_mode()
    def score_pairs(self, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(c, d)`` queries x ``(c, K, d)`` their candidates -> ``(c, K)`` scores."""
        c, k, d = items.shape
        q = queries.to(self.device, torch.float32)[:, None, :].expand(c, k, d).reshape(-1, d)
        return self.net(q, items.to(self.device, torch.float32).reshape(-1, d)).reshape(c, k).float()


def load_similarity(checkpoint: str, device: str | torch.device = "cpu") -> SimilarityScorer:
    """The similarity head of a ``train.task=rerank`` checkpoint (``weights_only`` load)."""
    meta = read_meta(checkpoint)
    if meta.task != "rerank":
        raise ValueError(f"{checkpoint} is a {meta.task!r} checkpoint, not a rerank one: train one with "
                         "train.task=rerank (configs/rerank.yaml)")
    cfg = meta.config.rerank
    dim = int(meta.config.model.embed_dim)
    net = create_similarity(cfg.head, dim, hidden=cfg.hidden, features=cfg.features)
    state = read_state(checkpoint)
    if "similarity" not in state:
        raise ValueError(f"{checkpoint} has no similarity weights")
    net.load_state_dict(state["similarity"])
    return SimilarityScorer(net, dim, head=cfg.head, checkpoint=checkpoint, device=device)
