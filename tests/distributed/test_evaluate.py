"""Evaluation report, retrieval grid and PR curve on the tiny set (untrained encoder, a gallery with sign codes)."""

import io
import json

from PIL import Image

from ray_sbir import fs
from ray_sbir.distributed.embed import UNTRAINED, ModelSource
from ray_sbir.distributed.evaluate import evaluate, write_pr_curves
from ray_sbir.data.plan import plan_dataset
from tests.conftest import tiny_config


def test_evaluation_report_and_figures(ray_local, tiny_doodles, tmp_path):
    # With sign codes of a rotation (search.codes_bits): the gallery holds them and is ranked two-stage.
    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"), "search.codes_bits=16", "search.codes_candidates=5")
    plan = plan_dataset(cfg)
    res = evaluate(cfg, ModelSource(UNTRAINED, cfg.model), str(tmp_path / "eval"), name="untrained", plan=plan)
    report = json.loads(fs.read_text(res.report_uri))
    assert report["classes"] == plan.split.unseen
    assert report["num_queries"] == 10 * len(plan.split.unseen)
    assert report["num_gallery"] == 10 * len(plan.split.unseen)
    m = report["metrics"]
    assert 0.0 < m["map_all"] <= 1.0
    assert set(map(str, m["precision_at"])) == {"10", "20"}
    assert set(m["per_class"]) == set(plan.split.unseen)
    assert report["scoring"]["codes"] == {"method": "sign_random_rotation", "bits": 16, "seed": 0, "candidates": 5}
    assert report["scoring"]["rescore"]["candidates"] == 5 and report["pipeline"] == "hamming > rescore:5"
    from ray_sbir.index import read_index
    from ray_sbir.search import EmbeddingKind

    gallery = read_index(res.gallery_index)
    kind = EmbeddingKind.from_manifest(gallery.manifest.embedding, gallery.embeddings.shape[1])
    assert (gallery.codes == kind.codes(gallery.embeddings)).all()
    grid = Image.open(io.BytesIO(fs.read_bytes(res.grid_uri)))
    assert grid.width > grid.height  # 1 query + 10 results per row, 2 rows
    pr = write_pr_curves([res], str(tmp_path / "pr.png"))
    assert Image.open(pr).size[0] > 100
