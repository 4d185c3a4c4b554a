"""A new model is one registered class: training, checkpoints and loading use it through the interface only."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.checkpoint import CheckpointMeta, load_model, write_checkpoint
from ray_sbir.config import load_config
from ray_sbir.models import RetrievalModel, list_models, register_model
from ray_sbir.training import TaskContext, create_task
from ray_sbir.training.step import Precision, make_optimizer, train_step


class PooledLinear(RetrievalModel):
    """Average-pool to 4x4, one linear map per modality: the smallest thing that is a retrieval model."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.heads = nn.ModuleDict({m: nn.Linear(3 * 16, cfg.embed_dim) for m in ("sketch", "photo")})

    @property
    def embed_dim(self):
        return self.cfg.embed_dim

    @property
    def unit_norm(self):
        return True

    def input_size(self, modality):
        return self.cfg.encoder_config(modality).image_size

    def encode(self, images, modality):
        return F.normalize(self.heads[modality](F.adaptive_avg_pool2d(images, 4).flatten(1)), dim=-1)


register_model("test_pooled_linear")(PooledLinear)


def test_a_registered_model_trains_checkpoints_and_loads(tmp_path):
    assert "test_pooled_linear" in list_models()
    cfg = load_config(None, ["model.name=test_pooled_linear", "model.embed_dim=8", "model.sketch.image_size=16",
                             "loss.terms={triplet: {weight: 1.0, margin: 0.5}}"])
    torch.manual_seed(0)
    task = create_task(cfg, TaskContext(["a", "b"]))
    assert isinstance(task.model, PooledLinear)
    opt = make_optimizer(task, cfg)
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.randn(4, 3, 16, 16, generator=g) for k in ("sketch", "positive", "negative")}
    batch.update(label=torch.tensor([0, 1, 0, 1]), negative_label=torch.tensor([1, 0, 1, 0]))
    terms = train_step(task, opt, Precision.for_device(torch.device("cpu"), amp=False), batch, 0.0)
    assert set(terms) == {"loss", "triplet"}
    folder = str(tmp_path / "ckpt")
    write_checkpoint(folder, task.trainable_state(), CheckpointMeta(0, cfg, ["a", "b"], {}))
    loaded, meta = load_model(folder)
    assert isinstance(loaded, PooledLinear) and meta.config.model.name == "test_pooled_linear"
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(loaded.encode(x, "photo"), task.model.encode(x, "photo"))
