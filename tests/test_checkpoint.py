import pickle

import pytest
import torch

from ray_sbir.checkpoint import CheckpointMeta, load_model, read_meta, read_state, write_checkpoint
from ray_sbir.config import Config, ConfigError, EncoderConfig, ModelConfig, load_config


def test_checkpoint_roundtrip_weights_only(tmp_path):
    cfg = Config(model=ModelConfig(embed_dim=16, sketch=EncoderConfig(backbone="resnet10t")))
    from ray_sbir.models import create_model

    torch.manual_seed(0)
    model = create_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 64, 64)
    model.encode(x, "sketch").sum().backward()
    opt.step()
    folder = str(tmp_path / "ckpt")
    write_checkpoint(folder, {"model": model.state_dict(), "optimizer": opt.state_dict()},
                     CheckpointMeta(epoch=3, config=cfg, classes=["a", "b"], metrics={"val_map": 0.5}))
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


def test_checkpoint_records_task_and_model_and_needs_no_pretrained_file(tmp_path):
    """A checkpoint of an asymmetric model whose pretrained weights file is gone still loads: the checkpoint
    holds every weight, and its config says what to build."""
    import timm

    weights = tmp_path / "photo_backbone.pt"
    torch.save(timm.create_model("test_vit", num_classes=0, global_pool="", img_size=48).state_dict(), weights)
    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=8",
                             "model.photo.backbone=test_vit", "model.photo.image_size=48",
                             f"model.photo.pretrained_weights={weights}", "model.normalize=batchnorm"])
    from ray_sbir.models import create_model

    model = create_model(cfg.model).eval()
    folder = str(tmp_path / "ckpt")
    write_checkpoint(folder, {"model": model.state_dict()}, CheckpointMeta(0, cfg, ["a"], {}))
    weights.unlink()
    loaded, meta = load_model(folder)
    assert meta.task == "doodle2search" and read_meta(folder).config.model.photo.backbone == "test_vit"
    assert loaded.input_size("photo") == 48 and not loaded.unit_norm
    x = torch.randn(2, 3, 48, 48)
    assert torch.allclose(loaded.encode(x, "photo"), model.encode(x, "photo"), atol=1e-6)


def test_checkpoint_of_an_older_format_gets_a_clear_error(tmp_path):
    import json

    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"epoch": 0, "classes": [], "metrics": {},
                                                  "config": {"model": {"backbone": "resnet10t"}}}))
    with pytest.raises(ConfigError, match="older ray-sbir.*train it again"):
        load_model(str(folder))
