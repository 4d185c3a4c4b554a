"""``serve run ray_sbir.serving:build key=value ...`` passes every value as a string: each goes through the config's
typed loader (YAML for non-string fields), so integers, booleans and sections work and bad values name the key."""

import pytest

from ray_sbir.serving import ServeConfig
from ray_sbir.serving.app import _typed_args


def test_string_arguments_are_typed_like_a_config_file():
    cfg = ServeConfig.from_dict(_typed_args({
        "checkpoint": "/runs/x/checkpoint_epoch_0001", "index": "/index/gallery", "rerank_k": "50",
        "use_gpu": "false", "num_shards": "3", "hamming_candidates": "0", "shard": "{num_cpus: 2}"}))
    assert (cfg.rerank_k, cfg.use_gpu, cfg.num_shards, cfg.shard.num_cpus) == (50, False, 3, 2)
    assert cfg.index == "/index/gallery"  # strings stay strings
    with pytest.raises(ValueError, match="serve.rerank_k: expected an integer, got 'fifty'"):
        ServeConfig.from_dict(_typed_args({"checkpoint": "/c", "index": "/i", "rerank_k": "fifty"}))


def test_build_runs_the_preflight_checks(tmp_path):
    """``serve deploy``'s builder stops on what every replica would fail on, naming it (no Ray needed)."""
    from ray_sbir.serving import build

    with pytest.raises(ValueError, match="index /nope/gallery cannot be served"):
        build({"checkpoint": str(tmp_path), "index": "/nope/gallery"})
    with pytest.raises(ValueError, match=f"index {tmp_path} cannot be served: no Parquet files"):
        build({"checkpoint": "/nope/ckpt", "index": str(tmp_path)})
