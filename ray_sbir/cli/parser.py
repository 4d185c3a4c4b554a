"""``ray-sbir``'s arguments: every subcommand and flag, with the help a user reads."""

from __future__ import annotations

import argparse

__all__ = ["build_parser"]

# where a path flag may point
LOCATION = "local path or fsspec URL: s3://, gs://, az://"
DEFAULT_DASHBOARD = "127.0.0.1:8265"  # as ray_sbir.distributed.runtime (not imported here: that imports Ray)
SEARCH_HELP = ("the ranking pipeline, e.g. 'hamming:500 > rescore > qe:20 > rerank:50' (default: the index's "
               "own, as its manifest records it)")
CODES_HELP = ("also write sign codes of a seeded random rotation of each embedding, BITS bits (e.g. 128): the index "
              "is then searched by Hamming distance, its first search.codes_candidates rows re-scored by the floats")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray-sbir")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"YAML config file ({LOCATION}); see configs/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=3 (repeatable)")
    _add_cluster_args(p)


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    """What every command that runs on a Ray cluster takes: where the cluster is, its size, its dashboard, ``-v``."""
    p.add_argument("--address", help="Ray cluster address, HOST:PORT of its head or 'auto' (default: RAY_ADDRESS, "
                                     "else a local cluster)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster started when no address")
    p.add_argument("--dashboard", nargs="?", const=DEFAULT_DASHBOARD, default=None, metavar="HOST:PORT",
                   help=f"start Ray's dashboard with the local cluster (default when given: {DEFAULT_DASHBOARD}, "
                        "loopback); a cluster given with --address has its own")
    _add_verbose(p)


def _add_verbose(p: argparse.ArgumentParser) -> None:
    # also accepted before the subcommand (build_parser): `ray-sbir -v train ...` and `ray-sbir train -v ...`
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug lines, and Ray's own warnings and internal messages (hidden by default)")


def _add_index_quickdraw_parser(sub) -> None:
    p = sub.add_parser("index-quickdraw", help="index QuickDraw ndjson files (any number) with Ray Data",
                       description="Stream every <class>.ndjson under --prefix, rasterise, embed with a checkpoint's "
                                   "sketch encoder and write a Parquet index. Resumable: re-running with the same "
                                   "--out, inputs and checkpoint skips the chunks already written.")
    p.add_argument("--prefix", required=True, help=f"folder/prefix holding <class>.ndjson files ({LOCATION})")
    p.add_argument("--checkpoint", required=True, help=f"training checkpoint folder ({LOCATION})")
    p.add_argument("--out", required=True, help=f"index folder to write ({LOCATION})")
    p.add_argument("--chunk-bytes", type=int, default=8 << 20, help="bytes of ndjson per unit of work (default 8 MiB)")
    p.add_argument("--concurrency", type=int, default=1, help="encoder actors")
    p.add_argument("--actors-per-gpu", type=int, default=1,
                   help="with --use-gpu: actors sharing one GPU, each parsing on its own CPU (about 5 keep a GPU busy)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-actor", type=float, default=1,
                   help="CPUs per encoder actor for parsing and rasterising (GPU actors: several, e.g. 4)")
    p.add_argument("--append-to", metavar="INDEX",
                   help="grow this index: index only the ndjson files none of its rows comes from and write it plus "
                        "them (minus --remove-ids) as its next version into --out; INDEX itself is left as it is")
    p.add_argument("--remove-ids", metavar="FILE", help="with --append-to: key ids to leave out, one per line")
    p.add_argument("--codes", type=int, metavar="BITS", help=CODES_HELP)
    _add_cluster_args(p)


def _add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve sketch search over HTTP with Ray Serve (doodle page at /)",
                       description="Start the Ray Serve app locally: a doodle page at /, POST /search, "
                                   "GET /items/{id}/image, /info, /healthz and OpenAPI docs at /docs. With no "
                                   "--checkpoint/--index it serves the latest `ray-sbir demo` run.")
    p.add_argument("--checkpoint", help=f"checkpoint folder ({LOCATION}); default: the one the --index was "
                                        "embedded with (its manifest), else the demo run's best")
    p.add_argument("--index", help=f"gallery index folder ({LOCATION}); default: the demo run's unseen gallery")
    p.add_argument("--demo-out", default="demo_out", help="demo run folder for the defaults (default: demo_out)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default: 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--proxy", choices=["auto", "haproxy", "serve"], default="auto",
                   help="HTTP front of the local cluster: haproxy (Ray Serve's HAProxy ingress: HAProxy sends "
                        "requests straight to the ingress replicas; ~6 ms less per request here), serve (Serve's "
                        "Python proxy), auto: haproxy when its binary is installed (default: auto). A cluster "
                        "given with --address keeps its own setting")
    p.add_argument("--mode", choices=["auto", "colocated", "sharded"], default="auto",
                   help="colocated: encoder and gallery in each ingress replica (lowest latency); sharded: "
                        "encoder and index shards as their own deployments (large galleries); auto: colocated "
                        "when the gallery's embeddings fit in 1 GiB (default: auto)")
    p.add_argument("--shards", type=int, default=2,
                   help="index shards in sharded mode, one Serve deployment each (default: 2)")
    p.add_argument("--encoder-replicas", type=int, default=1,
                   help="sketch encoder replicas (colocated: ingress replicas) (default: 1)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per encoder replica")
    p.add_argument("--rerank", help="similarity checkpoint (train.task=rerank) that re-scores each query's first "
                                    "--rerank-k results (default: no re-ranking)")
    p.add_argument("--rerank-k", type=int, default=100, help="candidates re-scored per query (default: 100)")
    p.add_argument("--search", metavar="SPEC", help=SEARCH_HELP)
    p.add_argument("--hamming-candidates", type=int, default=0,
                   help="a binary (hash code) index: re-score each shard's N Hamming-nearest items by the inner "
                        "product of their stored float relaxation (default 0: rank by Hamming distance)")
    p.add_argument("--api-key-env", help="require an API key on /search, /items and /info, read from this "
                                         "environment variable (the page and /healthz stay open)")
    p.add_argument("--api-key-file", help="as --api-key-env, the key being the first line of this file")
    _add_cluster_args(p)


def _add_config_parser(sub) -> None:
    p = sub.add_parser("config", help="print a run's effective config, each key with its one-line doc",
                       description="Load --config (default: the built-in defaults) with the --set overrides, check "
                                   "every value as a run would, and print the result as a YAML config file whose "
                                   "comments document each key. --markdown prints the reference of every key "
                                   "(docs/config.md).")
    p.add_argument("--config", help=f"YAML config file ({LOCATION}); see configs/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable)")
    p.add_argument("--markdown", action="store_true", help="the reference of every key and its default, as Markdown")
    _add_verbose(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-sbir", description="Zero-shot sketch-based image retrieval on Ray.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", dest="verbose_before", action="store_true",
                        help="as -v after the subcommand")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-doodles", help="generate the embedded zero-shot doodle benchmark",
                       description="Write the embedded benchmark: QuickDraw-format sketches, rendered photos, "
                                   "its unseen-class split and class word vectors.")
    p.add_argument("--out", required=True, help=f"output folder ({LOCATION})")
    p.add_argument("--sketches-per-class", type=int, default=60)
    p.add_argument("--photos-per-class", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    _add_verbose(p)

    p = sub.add_parser("train", help="train on the seen classes with Ray Train",
                       description="Train the sketch and photo encoders with Ray Train, fed by Ray Data. "
                                   "Re-running with the same train.name resumes the run.")
    _add_config_args(p)

    p = sub.add_parser("embed", help="embed a gallery into a Parquet index with Ray Data",
                       description="Embed the items of the given classes with a checkpoint's encoder.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or 'untrained'")
    p.add_argument("--out", required=True, help=f"index folder to write ({LOCATION})")
    p.add_argument("--modality", choices=["photo", "sketch"], default="photo")
    p.add_argument("--classes", choices=["unseen", "train", "val", "all"], default="unseen")
    p.add_argument("--append-to", metavar="INDEX",
                   help="grow this index: embed only the items it does not hold and write it plus them (minus "
                        "--remove-ids) as its next version into --out; INDEX itself is left as it is")
    p.add_argument("--remove-ids", metavar="FILE", help="with --append-to: ids to leave out, one per line")
    p.add_argument("--codes", type=int, metavar="BITS", help=CODES_HELP + " (= --set search.codes_bits=BITS)")

    p = sub.add_parser("evaluate", help="zero-shot evaluation on the unseen classes",
                       description="Embed the unseen classes' sketches and photos, and write report.json, "
                                   "retrieval_grid.png and pr_curve.png.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or 'untrained'")
    p.add_argument("--out", required=True, help=f"output folder ({LOCATION})")
    p.add_argument("--name", default="model", help="name of this evaluation in the outputs")
    p.add_argument("--search", metavar="SPEC", help=SEARCH_HELP + " (= --set search.pipeline=SPEC)")

    _add_index_quickdraw_parser(sub)

    p = sub.add_parser("augment", help="write a new version of an index with database-side augmentation",
                       description="Each gallery vector replaced by itself plus its --n nearest gallery rows "
                                   "weighted by similarity^alpha (alpha-DBA), as Ray tasks; the new index's "
                                   "manifest also records the query expansion the endpoint and evaluation apply.")
    p.add_argument("--index", required=True, help=f"source index folder ({LOCATION}), e.g. an embed output")
    p.add_argument("--out", required=True, help="new index folder (the source is left as it is)")
    p.add_argument("--n", type=int, default=5, help="neighbours averaged into each gallery vector (default 5)")
    p.add_argument("--alpha", type=float, default=3.0, help="similarity exponent of their weights (default 3)")
    p.add_argument("--qe-n", type=int, default=0, help="query expansion neighbours recorded (0: off)")
    p.add_argument("--qe-alpha", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=1, help="files augmented at once (each holds the index)")
    _add_cluster_args(p)

    p = sub.add_parser("demo", help="generate, train, embed and evaluate on the embedded benchmark",
                       description="Start a local Ray cluster, generate the doodle benchmark, train with Ray Train, "
                                   "embed the unseen gallery with Ray Data and compare with the untrained encoder.")
    _add_config_args(p)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--sketches-per-class", type=int, default=60)
    p.add_argument("--photos-per-class", type=int, default=60)

    _add_serve_parser(sub)
    _add_config_parser(sub)
    p = sub.add_parser("cluster-env", help="print the environment `ray start` needs on each node of a cluster",
                       description="Shell `export` lines of the Ray Serve settings ray-sbir's own local clusters "
                                   "use (HTTP front, HAProxy's replay of requests whose replica died), for "
                                   "`eval \"$(ray-sbir cluster-env)\"` before `ray start` (cluster.yaml does).")
    p.add_argument("--proxy", choices=["haproxy", "serve"], default="haproxy",
                   help="Serve's HTTP front on each node (default: haproxy)")
    _add_verbose(p)
    return parser
