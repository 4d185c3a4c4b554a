"""Zero-shot evaluation: embed the unseen classes' sketches (queries) and photos (gallery) with Ray Data, score
retrieval, and write a JSON report, a retrieval grid PNG and a precision-recall curve PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ray_sbir import fs
from ray_sbir.config import Config
from ray_sbir.data.decode import decode_one, render_spec
from ray_sbir.data.plan import DatasetPlan, plan_dataset
from ray_sbir.distributed.augment import finish_gallery, raw_index_uri
from ray_sbir.distributed.embed import ModelSource, embed_items
from ray_sbir.eval.metrics import RetrievalMetrics, hamming_radius_precision, retrieval_metrics
from ray_sbir.index import index_layout, read_index
from ray_sbir.search import index_kind, open_index
from ray_sbir.search.open import index_spec
from ray_sbir.eval.figures import pr_curve_png, retrieval_grid_png

GRID_TOP = 10


@dataclass
class EvalResult:
    name: str
    metrics: RetrievalMetrics
    report_uri: str
    grid_uri: str
    query_index: str
    gallery_index: str
    failures: list = field(default_factory=list)

    def summary(self) -> dict:
        m = self.metrics
        out = {"mAP@all": m.map_all}
        out.update({f"mAP@{k}": v for k, v in m.map_at.items()})
        out.update({f"P@{k}": v for k, v in m.precision_at.items()})
        return out


def _grid(cfg: Config, q_table, g_table, q_emb, index) -> bytes:
    """Top-10 gallery items for one query per class (the first few classes), wrong results marked."""
    labels = q_table["label"]
    picks, seen = [], set()
    for i, label in enumerate(labels):
        if label not in seen:
            seen.add(label)
            picks.append(i)
        if len(picks) >= cfg.eval.grid_queries:
            break
    _, idx = index.search(q_emb[picks], GRID_TOP)
    gallery = cfg.eval.gallery
    queries = [decode_one(q_table["uri"][i], q_table["strokes"][i], "sketch", render_spec(cfg, "sketch"))
               for i in picks]
    results = [[decode_one(g_table["uri"][j], g_table["strokes"][j], gallery, render_spec(cfg, gallery)) for j in row]
               for row in idx]
    correct = [[g_table["label"][j] == labels[i] for j in row] for i, row in zip(picks, idx)]
    return retrieval_grid_png(queries, results, correct, query_titles=[labels[i] for i in picks],
                              result_titles=[[g_table["label"][j] for j in row] for row in idx])


def evaluate(cfg: Config, source: ModelSource, out_dir: str, *, name: str = "model",
             plan: DatasetPlan | None = None, classes: list[str] | None = None) -> EvalResult:
    """Evaluate ``source`` on ``classes`` (default: the unseen classes) and write its report under ``out_dir``."""
    plan = plan or plan_dataset(cfg)
    classes = classes or plan.split.unseen
    # Queries and gallery are encoded alike: with the mirror average when the config's search section says so
    # (the gallery's manifest records it for the endpoint), and with its sign codes.
    source = source.with_search(cfg.search)
    gallery_modality = cfg.eval.gallery
    if gallery_modality not in ("photo", "sketch"):
        raise ValueError(f"eval.gallery must be photo or sketch, got {gallery_modality!r}")
    queries = plan.items(classes, "sketch")
    gallery = plan.items(classes, gallery_modality)
    kw = dict(batch_size=cfg.eval.batch_size, concurrency=cfg.eval.concurrency, use_gpu=cfg.eval.use_gpu, config=cfg,
              strict=cfg.data.strict)
    q_res = embed_items(queries, "sketch", source.queries(), fs.join(out_dir, name, "index", "queries"),
                        render_spec(cfg, "sketch"), **kw)
    gallery_uri = fs.join(out_dir, name, "index", "gallery")
    written = raw_index_uri(gallery_uri) if cfg.search.dba_n else gallery_uri
    g_res = embed_items(gallery, gallery_modality, source, written, render_spec(cfg, gallery_modality), **kw)
    # The search settings (query expansion, DBA) go into the gallery's manifest: the endpoint serving this
    # index ranks as this evaluation does.
    g_res.index_uri = finish_gallery(written, gallery_uri, cfg.search, concurrency=cfg.eval.concurrency)
    # Ranked through the search interface the endpoint uses, opened from the gallery index's manifest.
    q_idx, g_idx = read_index(q_res.index_uri), read_index(g_res.index_uri, columns=["id", "label"])
    # The pipeline the config names (search.pipeline), else the gallery's own: what the endpoint runs.
    scorer = None
    if cfg.search.rerank:
        from ray_sbir.search.rerank import load_similarity

        scorer = load_similarity(cfg.search.rerank)
    spec = index_spec(index_layout(g_res.index_uri), cfg.search.pipeline or None, where="search.pipeline")
    index = open_index(g_res.index_uri, spec=spec, scorer=scorer)
    q_emb = q_idx.embeddings
    metrics = retrieval_metrics(q_emb, q_idx.labels, None, g_idx.labels, index=index,
                                ks=tuple(cfg.eval.ks), map_ks=tuple(cfg.eval.map_ks),
                                recall_ks=tuple(cfg.eval.ks), chunk_size=cfg.eval.chunk_size)
    extra = _binary_extras(q_idx, g_res.index_uri)
    failures = q_res.failures + g_res.failures
    report = {
        "name": name, "checkpoint": source.checkpoint, "classes": classes, "split": "unseen",
        "num_queries": q_res.count, "num_gallery": g_res.count, "gallery_modality": gallery_modality,
        "flip_average": source.flip_average, "flip_queries": source.queries().flip_average,
        "pipeline": spec.to_string(), "scoring": spec.scoring(index_kind(index_layout(g_res.index_uri))),
        "metrics": {**metrics.to_dict(), **extra}, "failures": failures,
    }
    report_uri = fs.join(out_dir, name, "report.json")
    fs.write_text(report_uri, json.dumps(report, indent=2, default=float))
    # Rows of the grid need the items' sources: join the index rows back to the catalog by id.
    q_table, g_table = _sources(queries, q_idx), _sources(gallery, g_idx)
    grid_uri = fs.join(out_dir, name, "retrieval_grid.png")
    fs.write_bytes(grid_uri, _grid(cfg, q_table, g_table, q_emb, index))
    return EvalResult(name, metrics, report_uri, grid_uri, q_res.index_uri, g_res.index_uri, failures)


def _binary_extras(q_idx, gallery_uri: str) -> dict:
    """For a binary index: how it ranks and the precision within Hamming radius 2 (hash lookup)."""
    kind = index_kind(index_layout(gallery_uri))
    if not kind.binary:
        return {}
    g_codes = read_index(gallery_uri, columns=["label", "code"])
    return {"ranking": "hamming", "bits": kind.bits,
            **hamming_radius_precision(q_idx.codes, q_idx.labels, g_codes.codes, g_codes.labels, radius=2)}


def _sources(items, index) -> dict:
    """``uri``, ``strokes`` and ``label`` of an index's rows, in index order (joined to the catalog by id)."""
    by_id = {r["item_id"]: r for r in items.items.select(["item_id", "uri", "strokes"]).to_pylist()}
    rows = [by_id[i] for i in index.ids]
    return {"uri": [r["uri"] for r in rows], "strokes": [r["strokes"] for r in rows], "label": list(index.labels)}


def write_pr_curves(results: list[EvalResult], uri: str, title: str = "Precision-recall, unseen classes") -> str:
    fs.write_bytes(uri, pr_curve_png({r.name: r.metrics.pr_curve for r in results}, title))
    return uri
