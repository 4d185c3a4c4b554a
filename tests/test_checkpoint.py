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


def test_a_run_folder_stands_for_its_best_checkpoint(tmp_path):
    """``--checkpoint runs/x`` (and ``distill.teacher``, ``rerank.encoder``, serving): the checkpoint with the
    highest validation score, the latest among equals; damaged ones and other folders are skipped."""
    from ray_sbir.checkpoint import resolve_checkpoint
    from ray_sbir.distributed.embed import ModelSource
    from ray_sbir.models import create_model

    cfg = Config(model=ModelConfig(embed_dim=8, sketch=EncoderConfig(backbone="resnet10t", image_size=32)))
    run = tmp_path / "runs" / "demo"
    models = {}
    for epoch, score in ((0, 0.3), (1, 0.5), (2, 0.5), (3, 0.4)):
        torch.manual_seed(epoch)
        models[epoch] = create_model(cfg.model)
        write_checkpoint(str(run / f"checkpoint_epoch_{epoch:04d}"), {"model": models[epoch].state_dict()},
                         CheckpointMeta(epoch=epoch, config=cfg, classes=["a"], metrics={"score": score}))
    (run / "checkpoint_epoch_0009").mkdir()
    (run / "checkpoint_epoch_0009" / "meta.json").write_text("{not json")  # damaged: never the best
    (run / "other").mkdir()
    best = str(run / "checkpoint_epoch_0002")
    assert resolve_checkpoint(str(run)) == best
    assert resolve_checkpoint(best) == best  # a checkpoint folder is itself
    assert resolve_checkpoint(str(tmp_path / "nope")) == str(tmp_path / "nope")  # the reader names it
    assert read_meta(str(run)).epoch == 2
    loaded, meta = load_model(str(run))
    x = torch.randn(1, 3, 32, 32)
    assert meta.epoch == 2 and torch.allclose(loaded.encode(x, "sketch"), models[2].eval().encode(x, "sketch"))
    assert ModelSource(str(run)).checkpoint == best
    # As a task's input checkpoint, checked before anything starts.
    from ray_sbir.training.tasks import validate_task

    teacher = load_config(None, ["train.task=distill", f"distill.teacher={run}"])
    validate_task(teacher, check_paths=True)
    with pytest.raises(ConfigError, match="distill.teacher: no checkpoint at .*nope"):
        validate_task(load_config(None, ["train.task=distill", f"distill.teacher={tmp_path / 'nope'}"]),
                      check_paths=True)
