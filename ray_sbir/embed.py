"""Gallery embedding job: Ray Data ``map_batches`` with a stateful encoder on an actor pool -> Parquet index.

Each actor loads the encoder once (from a checkpoint folder, or freshly built for the untrained baseline),
decodes its batch and embeds it on its device (GPU when the job asks for one). The index is a folder of
Parquet shards with columns ``id, uri, label, modality, embedding`` (``fixed_size_list<float32>[dim]``,
L2-normalised) plus ``_manifest.json`` (count, dim, checkpoint, config, files) and ``_failures.json``: every
input item is in exactly one of the two. The JSON names start with ``_`` so Parquet readers (pyarrow, Ray
Data, Spark) that are pointed at the folder skip them, as they skip ``_SUCCESS``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data.expressions import col

from ray_sbir import fs
from ray_sbir.checkpoint import load_model
from ray_sbir.config import Config, ModelConfig
from ray_sbir.data.catalog import Catalog
from ray_sbir.data.decode import RenderSpec, decode_images
from ray_sbir.data.images import to_model_input
from ray_sbir.models import create_model
from ray_sbir.pipeline import _to_dataset

INDEX_COLUMNS = ("id", "uri", "label", "modality", "embedding")
UNTRAINED = "untrained"
MANIFEST, FAILURES = "_manifest.json", "_failures.json"


@dataclass(frozen=True)
class ModelSource:
    """Where the encoder comes from: a checkpoint folder, or ``UNTRAINED`` (pretrained backbone, fresh head)."""

    checkpoint: str
    model: ModelConfig | None = None  # required for UNTRAINED
    seed: int = 0

    def load(self, device) -> torch.nn.Module:
        if self.checkpoint == UNTRAINED:
            # The same seed as training's initialisation: the untrained baseline is the trained run's start.
            torch.manual_seed(self.seed)
            return create_model(self.model).to(device).eval()
        return load_model(self.checkpoint, device)[0]


class EmbedBatch:
    """Stateful Ray Data UDF: one encoder per actor, reused for every batch it gets."""

    def __init__(self, source: ModelSource, modality: str, spec: RenderSpec, use_gpu: bool = False):
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.encoder = source.load(self.device).encoder(modality)
        self.modality = modality
        self.spec = spec

    @torch.no_grad()
    def __call__(self, batch: dict) -> pa.Table:
        images, errors = decode_images(batch["uri"], batch.get("strokes"), self.modality, self.spec)
        ok = np.array([not e for e in errors], dtype=bool)
        dim = self.encoder.head.out_features
        emb = np.zeros((len(ok), dim), np.float32)
        if ok.any():
            x = to_model_input(torch.from_numpy(images[ok]), self.device)
            emb[ok] = self.encoder(x).float().cpu().numpy()
        return pa.table({
            "id": pa.array([str(v) for v in batch["item_id"]], pa.string()),
            "uri": pa.array([str(v) for v in batch["uri"]], pa.string()),
            "label": pa.array([str(v) for v in batch["label"]], pa.string()),
            "modality": pa.array([self.modality] * len(ok), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
            "error": pa.array(errors, pa.string()),
        })


@dataclass
class EmbedResult:
    index_uri: str
    count: int
    dim: int
    failures: list[dict]
    seconds: float


def embed_items(items: Catalog, modality: str, source: ModelSource, out_uri: str, spec: RenderSpec, *,
                batch_size: int = 64, concurrency: int = 1, use_gpu: bool = False,
                config: Config | None = None) -> EmbedResult:
    """Embed the ``modality`` items of ``items`` into a Parquet index at ``out_uri``."""
    t0 = time.time()
    table = items.select(modality=modality).items.select(["item_id", "uri", "label", "strokes"])
    if table.num_rows == 0:
        raise ValueError(f"nothing to embed: no {modality} items")
    ds = _to_dataset(table).map_batches(
        EmbedBatch, fn_constructor_kwargs={"source": source, "modality": modality, "spec": spec, "use_gpu": use_gpu},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency), num_gpus=1 if use_gpu else 0, batch_format="numpy",
    )
    # Materialise once: the good rows go to the index, the bad ones to the failure list, with no re-embedding.
    ds = ds.materialize()
    pafs, path = fs.pyarrow_filesystem(out_uri)
    fs.remove(out_uri, recursive=True)  # a re-run replaces the index rather than mixing two versions
    good = ds.filter(expr=col("error") == "").drop_columns(["error"])
    good.write_parquet(path, filesystem=pafs)
    failures = ds.filter(expr=col("error") != "").select_columns(["id", "uri", "error"]).take_all()
    files = fs.list_files(out_uri, (".parquet",))
    count = ds.count() - len(failures)
    first = ds.take(1)[0]
    dim = len(first["embedding"])
    manifest = {
        "count": count, "dim": dim, "modality": modality, "checkpoint": source.checkpoint,
        "files": [f.rsplit("/", 1)[-1] for f in files], "failures": len(failures),
        "config": config.to_dict() if config else None, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fs.write_text(fs.join(out_uri, MANIFEST), json.dumps(manifest, indent=2))
    fs.write_text(fs.join(out_uri, FAILURES), json.dumps(failures, indent=2))
    return EmbedResult(out_uri, count, dim, failures, time.time() - t0)
