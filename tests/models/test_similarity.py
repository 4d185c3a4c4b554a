"""Similarity heads: shapes, the linear head starting as the cosine, the registry."""

import pytest
import torch
import torch.nn.functional as F

from ray_sbir.models.similarity import create_similarity, list_similarity_heads


def test_heads_score_pairs():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    for head in ("mlp", "linear"):
        for features in ("concat", "symmetric"):
            assert create_similarity(head, 8, hidden=[16], features=features)(a, b).shape == (5,)
    # the linear head is the plain cosine until trained
    assert torch.allclose(create_similarity("linear", 8)(a, b), F.cosine_similarity(a, b), atol=1e-6)
    # the paper's network is not symmetric in (query, item)
    mlp = create_similarity("mlp", 8, hidden=[16])
    torch.nn.init.normal_(mlp.net[0].weight)
    assert not torch.allclose(mlp(a, b), mlp(b, a))
    assert set(list_similarity_heads()) >= {"mlp", "linear"}
    with pytest.raises(ValueError, match="unknown similarity head"):
        create_similarity("nope", 8)
