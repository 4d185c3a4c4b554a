"""Object storage end to end: the tiny benchmark on a real S3 server (moto, loopback) reached through s3fs.

Upload, train (Ray Train storage on s3://), evaluate (indexes, report and PNGs on s3://), all on the same code
path production uses; credentials never appear in what the run writes."""

import json

import s3fs

from ray_sbir import fs
from ray_sbir.checkpoint import load_model, read_meta
from ray_sbir.distributed.embed import ModelSource
from ray_sbir.distributed.evaluate import evaluate
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.train import train
from tests.conftest import tiny_config


def test_train_and_evaluate_on_s3(s3_server, ray_local, tiny_doodles):
    s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    s3.mkdir("sbir-test")
    s3.put(tiny_doodles, "sbir-test/doodles", recursive=True)
    root = "s3://sbir-test/doodles"
    assert fs.exists(fs.join(root, "unseen_classes.txt"))

    cfg = tiny_config(root, "s3://sbir-test/runs", "train.epochs=1", "train.name=s3run")
    plan = plan_dataset(cfg)
    assert plan.catalog.items["uri"][0].as_py().startswith("s3://")
    result = train(cfg, plan)
    assert result.best_checkpoint.startswith("s3://sbir-test/runs/s3run/")
    assert read_meta(result.best_checkpoint).epoch == 0
    load_model(result.best_checkpoint)  # weights_only load straight from object storage

    res = evaluate(cfg, ModelSource(result.best_checkpoint), "s3://sbir-test/eval", name="trained", plan=plan)
    report = json.loads(fs.read_text(res.report_uri))
    assert report["num_queries"] > 0 and 0 < report["metrics"]["map_all"] <= 1
    assert s3.exists("sbir-test/eval/trained/retrieval_grid.png")
    assert s3.ls("sbir-test/eval/trained/index/gallery")

    # Nothing the run wrote holds the credentials.
    secret = "testing-secret-key-never-logged"
    for path in s3.find("sbir-test/runs") + s3.find("sbir-test/eval"):
        if path.endswith((".json", ".yaml", ".txt")):
            assert secret not in s3.cat(path).decode(errors="ignore"), path
