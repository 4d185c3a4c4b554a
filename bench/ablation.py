"""Loss ablation on the embedded benchmark: triplet only; + domain; + domain + semantic (the full model).

Every variant trains from the same initialisation on the same classes and triplets (same seeds), and is
evaluated on the same unseen classes in the same run, beside the untrained encoder.

    python bench/ablation.py --out bench_out/ablation [--set train.epochs=8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ray_sbir import fs  # noqa: E402
from ray_sbir.config import load_config  # noqa: E402
from ray_sbir.data.doodles import make_doodles  # noqa: E402
from ray_sbir.demo import format_table  # noqa: E402
from ray_sbir.embed import UNTRAINED, ModelSource  # noqa: E402
from ray_sbir.evaluate import evaluate  # noqa: E402
from ray_sbir.train import init_ray, plan_dataset, train  # noqa: E402

VARIANTS = {
    "triplet only": ["loss.domain_weight=0", "loss.semantic_weight=0"],
    "triplet + domain": ["loss.semantic_weight=0"],
    "triplet + domain + semantic": [],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench_out/ablation")
    p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    data_root = fs.join(args.out, "doodles")
    if not fs.exists(fs.join(data_root, "unseen_classes.txt")):
        make_doodles(data_root)
    init_ray(num_cpus=3, object_store_memory=512 * 1024**2)
    base = [f"data.root={data_root}", f"train.storage_path={fs.join(args.out, 'runs')}", *args.overrides]
    cfg = load_config(args.config, base)
    plan = plan_dataset(cfg)
    rows = {"untrained encoder": evaluate(cfg, ModelSource(UNTRAINED, cfg.model, cfg.train.seed),
                                          fs.join(args.out, "eval"), name="untrained", plan=plan).summary()}
    for name, overrides in VARIANTS.items():
        slug = name.replace(" + ", "_").replace(" ", "_")
        vcfg = load_config(args.config, [*base, *overrides, f"train.name=ablation_{slug}"])
        result = train(vcfg, plan)
        rows[name] = evaluate(vcfg, ModelSource(result.best_checkpoint), fs.join(args.out, "eval"), name=slug,
                              plan=plan).summary()
        print(f"[ablation] {name}: {rows[name]}", flush=True)
    print("\nUnseen-class retrieval on the embedded benchmark:\n" + format_table(rows))
    fs.write_text(fs.join(args.out, "ablation.json"), json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
