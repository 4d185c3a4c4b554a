import pytest

from ray_sbir.config import Config, ConfigError, load_config, parse_override


def test_defaults_and_yaml_roundtrip(tmp_path):
    cfg = Config()
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(str(path)) == cfg


def test_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\nmodel:\n  embed_dim: 64\n")
    cfg = load_config(str(path), ["train.epochs=2", "train.lr=0.01", "eval.ks=[10, 20]", "data.max_per_class=null",
                                  "model.sketch.pretrained_weights=/w.pt", "data.val_classes=2"])
    assert cfg.train.epochs == 2 and cfg.model.embed_dim == 64
    assert cfg.train.lr == 0.01 and cfg.eval.ks == [10, 20]
    assert cfg.data.max_per_class is None and cfg.model.sketch.pretrained_weights == "/w.pt"
    assert cfg.data.val_classes == 2.0  # int widened to float


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epoch: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    msg = str(e.value)
    assert "'train.epoch'" in msg and "epochs" in msg and str(path) in msg


def test_unknown_section_and_override_key():
    with pytest.raises(ConfigError, match="'trian'.*valid keys: data, model, loss, train, eval, distill"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match="'model.embed_dims'"):
        load_config(None, ["model.embed_dims=3"])


def test_wrong_types_are_errors():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(None, ["train.epochs=three"])
    with pytest.raises(ConfigError, match="train.amp: expected true/false"):
        load_config(None, ["train.amp=3"])
    with pytest.raises(ConfigError, match=r"eval.ks\[1\]: expected an integer"):
        load_config(None, ["eval.ks=[1, x]"])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
