import pytest
import torch

from ray_sbir.losses import TermContext, term_options
from ray_sbir.losses.distill import EmbeddingDistillTerm


def test_embedding_distillation_hand_computed():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    out = {"sketch": s, "teacher_sketch": t}
    cos = EmbeddingDistillTerm(term_options("distill_embedding", {}), TermContext(2))(out, 1.0)
    assert cos["distill_embedding"].item() == pytest.approx(((1 - 0) + (1 - 1)) / 2)
    mse = EmbeddingDistillTerm(term_options("distill_embedding", {"kind": "mse"}), TermContext(2))(out, 1.0)
    assert mse["distill_embedding"].item() == pytest.approx(((1 + 1) + (0 + 1)) / 2)


def test_gradient_moves_the_student_towards_the_teacher():
    s = torch.tensor([[1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0]])
    term = EmbeddingDistillTerm(term_options("distill_embedding", {"kind": "mse"}), TermContext(2))
    term({"sketch": s, "teacher_sketch": t}, 1.0)["distill_embedding"].backward()
    assert torch.allclose(s.grad, 2 * (s.detach() - t))
