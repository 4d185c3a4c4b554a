"""Autoscaling timeline of the Serve app on a local cluster: rising load, then one client, in both modes.

Drives the app as ``tests/serving/test_autoscale.py`` does (same settings and load driver): 12 concurrent HTTP
clients until every watched deployment runs its maximum replicas, then a single client until they are back
at their minimum. Every 0.5 s it records the clients, the RUNNING replicas of each watched deployment and the
p50 latency of the requests finished in that interval; it writes the timeline as JSON, a table and a PNG.

    python bench/bench_autoscale.py --out bench_out/autoscale          # both modes, ~3 minutes
    python bench/bench_autoscale.py --tiny      # colocated only, 2 heavy clients, phases cut to 2 s (a smoke run)
"""

from __future__ import annotations

import json
import os
import tempfile

from common import bench_parser, parse_args, start_ray, tiny_workdir, write_result


def plot(timelines: dict, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6 * len(timelines)))
    FigureCanvasAgg(fig)
    for i, (mode, tl) in enumerate(timelines.items()):
        ax = fig.add_subplot(len(timelines), 1, i + 1)
        t = [s["t"] for s in tl["samples"]]
        for name in tl["samples"][0]["replicas"]:
            ax.step(t, [s["replicas"][name] for s in tl["samples"]], where="post", label=f"{name} replicas")
        ax.step(t, [s["clients"] for s in tl["samples"]], where="post", color="grey", alpha=0.5, label="clients")
        ax.set_ylabel("replicas / clients")
        ax.set_title(f"{mode}: {tl['requests']} requests, {len(tl['failures'])} failed")
        ax2 = ax.twinx()
        ax2.plot(t, [s["p50_ms"] or float("nan") for s in tl["samples"]], color="black", linestyle=":",
                 label="p50 latency (ms)")
        ax2.set_ylabel("p50 ms")
        ax.legend(loc="upper left", fontsize=8)
        ax2.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--out", default="bench_out/autoscale")
    p.add_argument("--modes", nargs="+", default=["colocated", "sharded"])
    p.add_argument("--heavy", type=int, default=12, help="concurrent clients of the rising load")
    p.add_argument("--up-timeout", type=float, default=90, help="seconds of heavy load at most, waiting for the bound")
    p.add_argument("--down-timeout", type=float, default=90, help="seconds of light load at most, waiting for the minimum")
    p.add_argument("--sample-s", type=float, default=0.5, help="seconds between samples")
    args = parse_args(p, tiny={"out": None, "modes": ["colocated"], "heavy": 2, "up_timeout": 2.0, "down_timeout": 2.0,
                               "sample_s": 0.25})
    args.out = args.out or tiny_workdir("bench_autoscale")
    os.makedirs(args.out, exist_ok=True)

    from ray_sbir.testing.galleries import make_gallery
    from ray_sbir.testing.serve import start_serve, stop_serve
    from ray_sbir.testing.autoscale import WATCHED, autoscaled_config, run_timeline

    ray = start_ray(4, 400)
    timelines = {}
    with tempfile.TemporaryDirectory() as tmp:
        gallery = make_gallery(tmp)
        for mode in args.modes:
            base = start_serve(autoscaled_config(gallery, mode))
            deployments, bound = WATCHED[mode]
            try:
                tl = run_timeline(base, {"strokes": gallery.drawings[0][2], "k": 10}, deployments, heavy=args.heavy,
                                  max_replicas=bound, min_replicas={d: 1 for d in deployments},
                                  up_timeout_s=args.up_timeout, down_timeout_s=args.down_timeout,
                                  sample_s=args.sample_s)
            finally:
                stop_serve()
            timelines[mode] = {"samples": tl.samples, "requests": tl.requests, "failures": tl.failures}
            print(json.dumps({"mode": mode, "requests": tl.requests, "failed": len(tl.failures)}), flush=True)
            for s in tl.samples:
                print(json.dumps(s), flush=True)
    ray.shutdown()
    write_result(args, timelines, path=os.path.join(args.out, "autoscale.json"), indent=1)
    plot(timelines, os.path.join(args.out, "autoscale.png"))
    print(f"wrote {args.out}/autoscale.json and autoscale.png")


if __name__ == "__main__":
    main()
