"""A tiny served gallery (random-init resnet10t checkpoint, 32-d, and an index of generated doodle photos and
sketches), a re-rank checkpoint over it, and the Serve config the tests and benches start it with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Gallery", "make_gallery", "make_rerank_checkpoint", "serve_config_for"]


@dataclass
class Gallery:
    root: str
    checkpoint: str
    index: str
    ids: list[str]
    labels: list[str]
    embeddings: np.ndarray
    drawings: list  # (key_id, class, strokes as [[xs], [ys]]) of some QuickDraw sketches
    model: torch.nn.Module
    size: int
    line_width: float
    padding: float
    flip_average: bool = False  # the index's manifest records mirror averaging: queries are encoded with it


def make_gallery(root: str, *, classes: int = 4, photos_per_class: int = 6, sketches_per_class: int = 3,
                 rows_per_file: int = 7, model_overrides: tuple[str, ...] = (),
                 sign_codes: tuple[int, int, int] = (0, 0, 200)) -> Gallery:
    """A checkpoint and an index of photos (+ two sketches per class, from ndjson) written to ``root``.
    ``model_overrides`` change the model (e.g. a hash model: the index then holds codes, as the embedding
    job writes them); ``sign_codes`` ``(bits, seed, candidates)`` add codes of a random rotation to a float
    model's index (``ray-sbir embed --codes``)."""
    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.data.catalog import build_catalog
    from ray_sbir.data.decode import decode_images, render_spec
    from ray_sbir.data.doodles import DOODLE_CLASSES, make_doodles
    from ray_sbir.data.images import to_model_input
    from ray_sbir.data.quickdraw import unpack_strokes
    from ray_sbir.models import create_model
    from ray_sbir.index import write_index
    from ray_sbir.search import EmbeddingKind

    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=32",
                             *model_overrides])
    torch.manual_seed(0)
    model = create_model(cfg.model).eval()
    checkpoint = f"{root}/checkpoint"
    write_checkpoint(checkpoint, {"model": model.state_dict()},
                     CheckpointMeta(epoch=1, config=cfg, classes=["train_a"], metrics={}))

    data = f"{root}/doodles"
    make_doodles(data, sketches_per_class=sketches_per_class, photos_per_class=photos_per_class, photo_size=64,
                 classes=DOODLE_CLASSES[:classes])
    catalog = build_catalog(data)
    spec = render_spec(cfg, "sketch")
    ids, uris, labels, mods, embs = [], [], [], [], []
    drawings = []
    for modality in ("photo", "sketch"):
        t = catalog.select(modality=modality).items.to_pydict()
        keep = range(len(t["uri"])) if modality == "photo" else \
            [i for i in range(len(t["uri"])) if i % sketches_per_class < 2]
        keep = list(keep)
        strokes = [t["strokes"][i] for i in keep] if modality == "sketch" else None
        images, errors = decode_images([t["uri"][i] for i in keep], strokes, modality, spec)
        assert not any(errors), errors
        with torch.inference_mode():
            embs.append(model.encode(to_model_input(torch.from_numpy(images)), modality).numpy())
        ids += [t["item_id"][i] for i in keep]
        uris += [t["uri"][i] for i in keep]
        labels += [t["label"][i] for i in keep]
        mods += [modality] * len(keep)
        if modality == "sketch":
            # The third sketch of each class is not in the gallery: it is a query.
            # The catalog packs strokes as (x, y, end) triples; a request posts [[xs], [ys]] lists.
            drawings = [(t["item_id"][i], t["label"][i],
                         [[s[:, 0].tolist(), s[:, 1].tolist()] for s in unpack_strokes(t["strokes"][i])])
                        for i in range(len(t["uri"])) if i % sketches_per_class == 2]
    emb = np.concatenate(embs)
    index = f"{root}/index"
    kind = EmbeddingKind.of_model(model).with_sign_codes(*sign_codes)
    write_index(index, ids, emb, labels=labels, uris=uris, modality=mods, rows_per_file=rows_per_file,
                codes=kind.codes(emb), extra_manifest={"embedding": kind.manifest_spec()})
    return Gallery(root, checkpoint, index, ids, labels, emb, drawings, model, spec.size, spec.line_width, spec.padding)


def make_rerank_checkpoint(encoder: str, folder: str, hidden: tuple[int, ...] = (16,), scale: float = 0.0) -> str:
    """A ``train.task=rerank`` checkpoint over ``encoder``'s space, untrained (``scale`` > 0: weights drawn with
    that std instead of the head's small init, so that the learned score visibly reorders)."""
    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.training import TaskContext, create_task, task_class

    cfg = load_config(None, ["train.task=rerank", f"rerank.encoder={encoder}", f"rerank.hidden={list(hidden)}",
                             "loss.terms={similarity_regression: {weight: 1}}"])
    cfg = task_class("rerank").prepare_config(cfg)
    torch.manual_seed(0)
    task = create_task(cfg, TaskContext(["train_a"]))
    if scale:
        for p in task.similarity.parameters():
            torch.nn.init.normal_(p, std=scale)
    write_checkpoint(folder, task.trainable_state(), CheckpointMeta(0, cfg, ["train_a"], {}))
    return folder


def serve_config_for(gallery: Gallery, **overrides):
    from ray_sbir.serving import ServeConfig

    args = dict(checkpoint=gallery.checkpoint, index=gallery.index, num_shards=2, max_k=50,
                max_body_bytes=256 * 1024, max_pixels=1_000_000, max_strokes=200, max_points=20_000, retry_timeout_s=60,
                encoder={"num_cpus": 0.5, "max_batch_size": 8, "batch_wait_timeout_s": 0.02},
                shard={"num_cpus": 0.25}, ingress={"num_cpus": 0.25})
    args.update(overrides)
    return ServeConfig(**args)
