"""The GPU kit's smoke run (``scripts/gpu_kit.py check`` runs it in a clean environment on CPU; the device
script runs it first on the GPU machine): a Ray task, a Ray Data pipeline, then this project end to end through
its CLI -- ``ray-sbir demo`` on the tiny preset (Ray Train, Ray Data embedding, evaluation) and ``ray-sbir
serve`` answering ``/search`` over HTTP. Exits non-zero, saying which step failed."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def step(name: str) -> None:
    print(f"[smoke] {name}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_core_and_data() -> None:
    import ray

    step(f"ray {ray.__version__} from {os.path.dirname(ray.__file__)}")
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False)
    assert ray.get(ray.remote(lambda x: x * 2).remote(21)) == 42
    total = ray.data.range(1000).map_batches(lambda b: {"id": b["id"] * 2}).sum("id")
    assert total == 999_000, total
    import ray.train.torch  # noqa: F401  -- Ray Train's torch integration imports with the kit
    ray.shutdown()
    step("ray task, ray data pipeline, ray.train.torch import: ok")


def cli(*args: str, timeout: float = 900) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "ray_sbir.cli", *args], env=env, timeout=timeout, text=True,
                          capture_output=True)
    if proc.returncode:
        raise SystemExit(f"ray-sbir {args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    print(proc.stdout[-1500:], flush=True)


def serve_and_search(demo: Path) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = open(demo / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ray_sbir.cli", "serve", "--demo-out", str(demo), "--port",
                             str(port), "--proxy", "serve", "--num-cpus", "2"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"ray-sbir serve exited ({proc.returncode}):\n"
                                 f"{(demo / 'serve.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(2)
        else:
            raise SystemExit(f"the endpoint did not come up in 300 s; log: {demo / 'serve.log'}")
        body = json.dumps({"k": 5, "strokes": [[[10, 60, 110], [100, 20, 100]]]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/search", body, {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        assert answer["count"] == 5, answer
        return answer
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", required=True, help="folder for the demo run")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ray_core_and_data()
    step("ray-sbir demo (tiny preset): Ray Train, Ray Data embedding, evaluation")
    demo = work / "demo"
    cli("demo", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(demo), "--sketches-per-class", "6",
        "--photos-per-class", "6", "--set", "train.epochs=1", "--num-cpus", "3",
        # gensim (word vectors, 27 MB) is not in the kit: no semantic term here
        "--set", "loss.terms.semantic.weight=0")
    step("ray-sbir serve + POST /search over HTTP")
    answer = serve_and_search(demo)
    step(f"search answered {answer['count']} results in {answer['timing_ms']['total']} ms; all ok in "
         f"{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
