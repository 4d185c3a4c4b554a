import pickle

import pytest
import torch

from ray_sbir.checkpoint import CheckpointMeta, load_model, read_state, write_checkpoint
from ray_sbir.config import Config, ModelConfig


def test_checkpoint_roundtrip_weights_only(tmp_path):
    cfg = Config(model=ModelConfig(backbone="resnet10t", embed_dim=16))
    from ray_sbir.models import create_model

    torch.manual_seed(0)
    model = create_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 64, 64)
    model.encode(x, "sketch").sum().backward()
    opt.step()
    folder = str(tmp_path / "ckpt")
    write_checkpoint(folder, model=model, optimizer=opt,
                     meta=CheckpointMeta(epoch=3, config=cfg, classes=["a", "b"], metrics={"val_map": 0.5}))
    state = read_state(folder)  # weights_only=True inside
    assert "optimizer" in state and state["optimizer"]["state"]
    loaded, meta = load_model(folder)
    assert meta.epoch == 3 and meta.classes == ["a", "b"] and meta.config == cfg
    model.eval()
    assert torch.allclose(loaded.encode(x, "photo"), model.encode(x, "photo"), atol=1e-6)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    with open(folder / "state.pt", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        read_state(str(folder))


def test_missing_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a ray-sbir checkpoint"):
        load_model(str(tmp_path))
