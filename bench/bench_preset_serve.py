"""A preset's endpoint against its first stage, run as a user runs them: held-out mAP@all beside requests/s over
HTTP for each variant of the search settings, and where one request's time goes.

For each variant of ``--variants`` (:data:`VARIANTS`: ``--set`` overrides of the checkpoint's own config, whose
``search`` section is the preset's re-ranking):

1. ``ray-sbir evaluate --checkpoint C --config <C's config> --set ...`` on the held-out classes of ``--data``
   (``--unseen``): their photos embedded into a gallery index that records the variant's search settings, the
   held-out sketches ranked through the pipeline that index names, as the endpoint ranks: held-out mAP@all;
2. ``ray-sbir serve --index <that gallery> --checkpoint C --api-key-env ...`` started as a subprocess (its own
   local Ray cluster, default search mode and HTTP proxy), then ``--requests`` requests from ``--clients``
   clients, each with the API key, mixed: the held-out sketches as PNG uploads (rendered at 256 px, as Sketchy's
   files are) and QuickDraw drawings as strokes JSON (``tests/fixtures/quickdraw``): requests/s, p50/p99
   latency and the p50 of the ingress's own ``timing_ms`` per stage;
3. in this process, one request's work split (one thread, as a serving replica runs): PNG decode, strokes
   render, the sketch encoder on one view and on both (batch 1 and 16, in the library's CPU passes), the first
   stage's search and the variant's whole pipeline over its gallery.

    python bench/bench_preset_serve.py --checkpoint bench_out/ckpt/pk_supcon_kd_seed0 \\
        --data ../shared/data/sketchy-seen104 --unseen configs/sketchy_dev_unseen.txt \\
        --json bench_out/preset_serve.json
    python bench/bench_preset_serve.py --tiny
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from bench_serving import http_concurrent, summary
from common import REPO, bench_parser, decode_classes, ensure_doodles, environment, free_port, parse_args, \
    stop_process, tiny_workdir, write_result

VARIANTS = {  # name: overrides of the checkpoint's config (its search section is the preset's re-ranking)
    "first_stage": ["search.flip_average=false", "search.dba_n=0", "search.query_expansion_n=0"],
    "preset": [],
    "gallery_mirror": ["search.flip_queries=false"],  # the gallery mirrored, each query encoded once
    "no_mirror": ["search.flip_average=false"],
}
KEY_ENV = "SBIR_BENCH_KEY"
QUICKDRAW = os.path.join(REPO, "tests", "fixtures", "quickdraw")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray_sbir.cli", *args]


def data_overrides(args) -> list[str]:
    """The overrides every variant and the request bodies share: the data, its held-out classes, ``--set``."""
    return [f"data.root={args.data}", *([f"data.unseen={args.unseen}"] if args.unseen else []), *args.set]


def evaluate(args, config: str, name: str, overrides: list[str], out: str) -> dict:
    """``ray-sbir evaluate`` of one variant: its report (metrics) and gallery index (with ``--reuse``, an earlier
    run's in the same ``--workdir`` when its overrides were the same)."""
    sets = [*data_overrides(args), *overrides]
    cmd = cli("evaluate", "--config", config, "--checkpoint", args.checkpoint, "--out", out, "--name", name,
              "--num-cpus", str(args.num_cpus), *[a for s in sets for a in ("--set", s)])
    t0 = time.perf_counter()
    report_path, done = os.path.join(out, name, "report.json"), os.path.join(out, name, "bench_command.json")
    if not (args.reuse and os.path.exists(done) and json.load(open(done)) == cmd[1:]):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(done, "w") as f:
            json.dump(cmd[1:], f)
    with open(report_path) as f:
        report = json.load(f)
    return {"map_all": report["metrics"]["map_all"], "pipeline": report["pipeline"], "seconds":
            round(time.perf_counter() - t0, 1), "gallery": os.path.join(out, name, "index", "gallery")}


def request_bodies(args, config: str, n: int) -> list[tuple[str, bytes, str]]:
    """``(kind, body, content type)``: held-out sketches as PNG files and QuickDraw strokes, alternating."""
    from PIL import Image

    from ray_sbir.config import load_config
    from ray_sbir.data.decode import RenderSpec
    from ray_sbir.data.plan import plan_dataset
    from ray_sbir.data.quickdraw import MalformedDrawing, parse_line

    cfg = load_config(config, data_overrides(args))
    plan = plan_dataset(cfg)
    images, _ = decode_classes(plan, plan.split.unseen, "sketch", RenderSpec(256, cfg.data.line_width,
                                                                             cfg.data.padding))
    pngs = []
    for image in images[:n]:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    strokes = []
    for name in sorted(os.listdir(QUICKDRAW)):
        with open(os.path.join(QUICKDRAW, name)) as f:
            for line in f:
                try:  # the fixtures hold malformed lines on purpose: only valid drawings are sent
                    parse_line(line)
                except MalformedDrawing:
                    continue
                strokes.append(json.dumps({"strokes": json.loads(line)["drawing"], "k": args.k}).encode())
    out = []
    for i in range(n):
        out.append(("png", pngs[i % len(pngs)], "image/png") if i % 2 == 0 else
                   ("strokes", strokes[i % len(strokes)], "application/json"))
    return out


def serve_and_load(args, gallery: str, bodies: list[tuple[str, bytes, str]], replicas: int) -> dict:
    """``ray-sbir serve --encoder-replicas replicas`` on ``gallery``, loaded by ``--clients`` clients; stopped
    after."""
    import httpx

    port = free_port()
    env = {**os.environ, KEY_ENV: "bench-key"}
    log = open(os.path.join(os.path.dirname(gallery), "serve.log"), "w")
    proc = subprocess.Popen(cli("serve", "--index", gallery, "--checkpoint", args.checkpoint, "--port", str(port),
                                "--api-key-env", KEY_ENV, "--num-cpus", str(args.num_cpus),
                                "--encoder-replicas", str(replicas)),
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base, headers = f"http://127.0.0.1:{port}", {"X-API-Key": "bench-key"}
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray-sbir serve exited with {proc.returncode}: see {log.name}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        up = time.perf_counter() - t0
        stages: dict[str, list[float]] = {}
        with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
            for kind, body, ctype in bodies[:2 * args.clients]:  # warm-up, and each stage's own timings
                r = client.post("/search", content=body, headers={"content-type": ctype})
                r.raise_for_status()
                for key, ms in r.json()["timing_ms"].items():
                    stages.setdefault(f"{kind}:{key}", []).append(ms)
        lat, elapsed = http_concurrent(base, [b for _, b, _ in bodies], args.clients, headers=headers,
                                       content_types=[c for _, _, c in bodies])
        return {"up_s": round(up, 1), **{k: round(v, 2) for k, v in summary(lat, elapsed).items()},
                "stage_p50_ms": {k: round(statistics.median(v), 2) for k, v in sorted(stages.items())}}
    finally:
        stop_process(proc, timeout=60)
        log.close()


def split_request(args, config: str, gallery: str, bodies) -> dict:
    """One request's work in this process, one thread: decode, render, encode, first stage, whole pipeline."""
    import torch

    from ray_sbir.checkpoint import load_model
    from ray_sbir.data.decode import render_spec
    from ray_sbir.data.images import decode_sketch_image, to_model_input
    from ray_sbir.data.quickdraw import rasterize, strokes_from_lists
    from ray_sbir.models.inference import encode
    from ray_sbir.search import open_index

    torch.set_num_threads(1)
    model, meta = load_model(args.checkpoint, "cpu")
    model = model.keep_only("sketch").eval()
    spec = render_spec(meta.config, "sketch")
    png = next(b for k, b, _ in bodies if k == "png")
    lines = json.loads(next(b for k, b, _ in bodies if k == "strokes"))["strokes"]

    def timed(fn, repeats: int = 20) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return round((time.perf_counter() - t) / repeats * 1e3, 2)

    image = decode_sketch_image(png, spec.size)
    out = {"png_decode_ms": timed(lambda: decode_sketch_image(png, spec.size)),
           "strokes_render_ms": timed(lambda: rasterize([[np.asarray(s[:, :2], np.float32)
                                                          for s in strokes_from_lists(lines)]], spec.size,
                                                        spec.line_width, spec.padding))}
    with torch.inference_mode():
        for batch in (1, 16):
            x = to_model_input(torch.from_numpy(np.repeat(image[None], batch, 0)), "cpu")
            for flip in (False, True):
                ms = timed(lambda: encode(model, x, "sketch", flip_average=flip), 10 if batch == 1 else 3)
                out[f"encode_{'2' if flip else '1'}view_batch{batch}_ms_per_sketch"] = round(ms / batch, 2)
        q = encode(model, to_model_input(torch.from_numpy(image[None].copy()), "cpu"), "sketch").float().numpy()
    first, whole = open_index(gallery, expand=False), open_index(gallery)
    out["first_stage_search_ms"] = timed(lambda: first.search(q, args.k))
    out["pipeline_search_ms"] = timed(lambda: whole.search(q, args.k))
    return out


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--checkpoint", help="a trained checkpoint (its config is the preset's)")
    p.add_argument("--data", help="dataset root (the Sketchy layout, or the doodles')")
    p.add_argument("--unseen", default="", help="held-out class list (default: the checkpoint config's)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config overrides for every variant")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of each local Ray cluster the CLI starts")
    p.add_argument("--replicas", type=int, nargs="+", default=[1],
                   help="serve each variant with each of these --encoder-replicas (colocated: app replicas)")
    p.add_argument("--pass-pixels", type=int, default=None,
                   help="the encoders' CPU pass budget (RAY_SBIR_CPU_PASS_PIXELS, for every process of the run; "
                        "0: one forward pass per batch; default: the library's)")
    p.add_argument("--reuse", action="store_true", help="reuse a variant's evaluation from an earlier run in "
                                                         "--workdir (same command)")
    p.add_argument("--workdir", default="", help="where the evaluation folders go (default: a temp dir)")
    args = parse_args(p, tiny={"variants": ["preset"], "requests": 8, "clients": 2})
    if args.pass_pixels is not None:  # before anything imports the library: this process and its children
        os.environ["RAY_SBIR_CPU_PASS_PIXELS"] = str(args.pass_pixels)
    root = args.workdir or tiny_workdir("bench_preset_serve")
    os.makedirs(root, exist_ok=True)
    if args.tiny or not args.checkpoint:
        args.checkpoint, args.data = tiny_checkpoint(root)
    from ray_sbir.checkpoint import read_meta
    from ray_sbir.config import save_config

    config = os.path.join(root, "config.yaml")  # the checkpoint's own config: the preset it was trained with
    save_config(read_meta(args.checkpoint).config, config)
    bodies = request_bodies(args, config, args.requests)
    rows = []
    for name in args.variants:
        evaluated = evaluate(args, config, name, VARIANTS[name], os.path.join(root, "eval"))
        split = split_request(args, config, evaluated["gallery"], bodies)
        print(f"{name}: held-out mAP@all {evaluated['map_all']:.4f} ({evaluated['pipeline']}); in process {split}",
              flush=True)
        for replicas in args.replicas:
            row = {"variant": name, "overrides": VARIANTS[name], "replicas": replicas, **evaluated,
                   "http": serve_and_load(args, evaluated["gallery"], bodies, replicas), "in_process": split}
            rows.append(row)
            h = row["http"]
            print(f"{name}, {replicas} replica(s): {args.clients} clients {h['qps']:.1f} req/s, p50 {h['p50_ms']} ms, "
                  f"p99 {h['p99_ms']} ms; stages p50 {h['stage_p50_ms']}", flush=True)
    from ray_sbir.models.inference import CPU_PASS_PIXELS

    write_result(args, {"checkpoint": args.checkpoint, "cpu_pass_pixels": CPU_PASS_PIXELS, "rows": rows,
                        "environment": environment()})
    return 0


def tiny_checkpoint(root: str) -> tuple[str, str]:
    """A random-init checkpoint of ``configs/tiny.yaml`` with the preset's re-ranking (mirror, DBA, QE) in its
    config, and the doodle data it is evaluated on."""
    import torch

    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.models import create_model

    data = ensure_doodles(os.path.join(root, "doodles"), classes=8, per_class=6)
    cfg = load_config(os.path.join(REPO, "configs", "tiny.yaml"), [
        "search.flip_average=true", "search.dba_n=2", "search.query_expansion_n=3", f"data.root={data}"])
    torch.manual_seed(0)
    checkpoint = os.path.join(root, "checkpoint")
    write_checkpoint(checkpoint, {"model": create_model(cfg.model).eval().state_dict()},
                     CheckpointMeta(epoch=0, config=cfg, classes=["bench"], metrics={}))
    return checkpoint, data


if __name__ == "__main__":
    raise SystemExit(main())
