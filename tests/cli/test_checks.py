"""Every flag is checked before Ray starts or is joined: each wrong invocation is one sentence naming the flag (or
config key), exit 2, within seconds, and no cluster is started or joined (``ray_sbir.cli.checks``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ray_sbir.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tiny.yaml")
NO_GPU = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the machine without a GPU")


@pytest.fixture()
def index_folder(tmp_path):
    """A folder with an index manifest (what --index / --append-to need to be read as an index)."""
    import numpy as np

    from ray_sbir.index.writer import write_index

    out = str(tmp_path / "index")
    write_index(out, ["a", "b"], np.eye(2, 4, dtype=np.float32), labels=["cat", "dog"], uris=["a.png", "b.png"])
    return out


def run(argv: list[str], capsys) -> tuple[int, str]:
    import ray

    before = ray.is_initialized()
    code = main(argv)
    assert ray.is_initialized() == before, "a cluster was started or joined"
    return code, capsys.readouterr().err.strip()


def train_argv(root: str, *overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    sets = [a for o in (f"data.root={root}", *overrides) for a in ("--set", o)]
    return ["train", "--config", TINY, *sets, *flags]


CASES = {  # id: (argv maker, what the one sentence says: {t} the test's folder, {i} an index)
    "num_cpus_0": (lambda r, i, t: train_argv(r, flags=("--num-cpus", "0")), "--num-cpus must be >= 1, got 0"),
    "workers_beyond_cpus": (lambda r, i, t: train_argv(r, "train.num_workers=8", flags=("--num-cpus", "2")),
                            "train.num_workers x train.cpus_per_worker needs 9 CPUs (8 reserved, 1 left to Ray Data) "
                            "and the local cluster has 2 (--num-cpus)"),
    "val_classes_beyond_data": (lambda r, i, t: train_argv(r, "data.val_classes=100"), "val_classes=100"),
    "random_unseen_beyond_data": (lambda r, i, t: train_argv(r, "data.unseen=random:999"), "random:999: need 0 < N"),
    "storage_not_writable": (lambda r, i, t: train_argv(r, f"train.storage_path={t}/file/runs"),
                             "train.storage_path {t}/file/runs: {t}/file is a file, not a folder"),
    "out_not_writable": (lambda r, i, t: ["embed", "--config", TINY, "--set", f"data.root={r}", "--checkpoint",
                                          "untrained", "--out", f"{t}/file/o"],
                         "--out {t}/file/o: {t}/file is a file, not a folder"),
    "port": (lambda r, i, t: ["serve", "--port", "70000"], "--port 70000: a TCP port is 1-65535"),
    "host": (lambda r, i, t: ["serve", "--host", "not-a-host.invalid"], "--host not-a-host.invalid: not an address"),
    "cpus_per_actor_0": (lambda r, i, t: ["index-quickdraw", "--prefix", "/nope", "--checkpoint", "/x", "--out",
                                          f"{t}/o", "--cpus-per-actor", "0"],
                         "--cpus-per-actor must be >= 0.01, got 0"),
    "augment_concurrency_0": (lambda r, i, t: ["augment", "--index", i, "--out", f"{t}/o", "--concurrency", "0"],
                              "--concurrency must be >= 1, got 0"),
    "augment_out_is_index": (lambda r, i, t: ["augment", "--index", i, "--out", i + "/"],
                             "--out {i}/ is the --index folder"),
    "append_to_missing": (lambda r, i, t: ["embed", "--config", TINY, "--set", f"data.root={r}", "--checkpoint",
                                           "untrained", "--out", f"{t}/o", "--append-to", "/nope"],
                          "--append-to /nope: no such index folder"),
    "dashboard_port": (lambda r, i, t: train_argv(r, flags=("--dashboard", "127.0.0.1:99999")),
                       "--dashboard 127.0.0.1:99999: port 99999 is not in 1-65535"),
    "codes_of_a_hashing_model": (lambda r, i, t: ["embed", "--config", TINY, "--set", f"data.root={r}", "--set",
                                                  "model.name=hash_dual_encoder", "--set", "model.normalize=tanh",
                                                  "--checkpoint", "untrained", "--out", f"{t}/o", "--codes", "64"],
                                 "this model already makes hash codes"),
    "search_stage_the_index_cannot_run": (
        lambda r, i, t: ["evaluate", "--config", TINY, "--set", f"data.root={r}", "--set", "data.unseen=random:2",
                         "--checkpoint", "untrained", "--out", f"{t}/o", "--search", "exact > rescore:5"],
        "search.pipeline 'exact > rescore:5': rescore re-scores Hamming candidates: this index has no codes"),
    "search_rerank_without_checkpoint": (
        lambda r, i, t: ["evaluate", "--config", TINY, "--set", f"data.root={r}", "--set", "data.unseen=random:2",
                         "--checkpoint", "untrained", "--out", f"{t}/o", "--search", "exact > rerank:5"],
        "search.pipeline: a rerank stage needs search.rerank"),
    "search_unknown_stage": (lambda r, i, t: ["serve", "--index", i, "--checkpoint", i, "--search", "exact > blur"],
                             "search: unknown stage 'blur'"),
    "codes_negative": (lambda r, i, t: ["embed", "--config", TINY, "--set", f"data.root={r}", "--checkpoint",
                                        "untrained", "--out", f"{t}/o", "--codes", "-8"],
                       "search.codes_bits: must be >= 0, got -8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_invocations_are_one_sentence_before_ray(case, tiny_doodles, index_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    make, message = CASES[case]
    argv = make(tiny_doodles, index_folder, str(tmp_path))
    started = time.time()
    code, err = run(argv, capsys)
    message = message.format(t=tmp_path, i=index_folder)
    assert code == 2 and message in err, err
    assert len(err.splitlines()) == 1, err
    assert time.time() - started < 10


@NO_GPU
@pytest.mark.parametrize("argv", [["train", "--config", TINY, "--set", "train.use_gpu=true"],
                                  ["serve", "--use-gpu"]], ids=["train", "serve"])
def test_a_gpu_asked_for_where_none_is(argv, tiny_doodles, capsys):
    if argv[0] == "train":
        argv = [*argv, "--set", f"data.root={tiny_doodles}"]
    code, err = run(argv, capsys)
    assert code == 2 and "GPU(s), and this machine has none that torch can use" in err, err


def test_an_address_where_no_cluster_listens_is_said_within_seconds(tiny_doodles):
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "ray_sbir.cli", "train", "--config", TINY, "--set",
                           f"data.root={tiny_doodles}", "--address", "127.0.0.1:1"], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("ray-sbir: error: --address 127.0.0.1:1: no Ray cluster answers there "
                                   "(connection refused after at most 5 s)"), proc.stderr
    assert time.time() - started < 10


def test_verbose_before_or_after_the_subcommand_and_version():
    from ray_sbir.cli import build_parser

    for argv in (["-v", "cluster-env"], ["cluster-env", "-v"]):
        args = build_parser().parse_args(argv)
        assert args.verbose or args.verbose_before
    proc = subprocess.run([sys.executable, "-m", "ray_sbir.cli", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0 and proc.stdout.startswith("ray-sbir "), proc


def test_joined_cluster_short_of_the_request_is_one_sentence():
    from ray_sbir.cli.checks import Request, check_cluster_resources

    with pytest.raises(ValueError, match=r"^train.num_workers x train.cpus_per_worker needs 2 GPU\(s\), it has 0; "
                                         r"9 CPUs \(8 reserved, 1 left to Ray Data\), it has 4 on the cluster at "
                                         r"10.0.0.5:6379"):
        check_cluster_resources(Request("train.num_workers x train.cpus_per_worker", cpus=8, gpus=2, spare_cpus=1),
                                {"CPU": 4.0}, "10.0.0.5:6379")
    check_cluster_resources(Request("x", cpus=8, gpus=2), {"CPU": 16.0, "GPU": 2.0}, "h:1")  # enough: no error
