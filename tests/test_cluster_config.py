"""cluster.yaml: valid for Ray's own cluster launcher, and the choices docs/cluster.md relies on hold.

Validation goes through the launcher's code path without touching AWS: ``prepare_config`` (merges the
AWS provider defaults, the setup commands, docker checks, per-type worker bounds) then ``validate_config``
(the JSON schema shipped as ray/autoscaler/ray-schema.json plus the launcher's cross-field checks). This is
what ``ray up`` runs before it calls the cloud.
"""

from __future__ import annotations

import copy
import os
import re

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_YAML = os.path.join(REPO, "cluster.yaml")

# GPUs per EC2 instance type (AWS's published specs), to catch a node type advertising GPUs it lacks.
EC2_GPUS = {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.8xlarge": 1, "g5.12xlarge": 4,
            "g5.16xlarge": 1, "g5.24xlarge": 4, "g5.48xlarge": 8, "p4d.24xlarge": 8, "p5.48xlarge": 8}


def _load() -> dict:
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


def _validate(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    return _load()


def _worker_types(config: dict) -> dict:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def test_schema_is_rays_own():
    schema = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    assert os.path.isfile(schema), "the installed Ray ships no cluster-config schema"


def test_cluster_yaml_passes_ray_validation(config):
    prepared = _validate(config)
    # The launcher's own defaulting leaves our bounds intact.
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0


def _unknown_top_level_key(c):
    c["max_worker"] = 3  # typo of max_workers


def _unknown_node_type_key(c):
    c["available_node_types"]["gpu.g5.xlarge"]["gpus"] = 1


def _resources_missing(c):
    del c["available_node_types"]["gpu.g5.xlarge"]["resources"]


def _fractional_gpu(c):
    c["available_node_types"]["gpu.g5.xlarge"]["resources"]["GPU"] = 0.5


def _unknown_docker_key(c):
    c["docker"]["imag"] = c["docker"]["image"]


def _head_type_not_defined(c):
    c["head_node_type"] = "ray.head.missing"


def _min_workers_above_global_max(c):
    c["available_node_types"]["gpu.g5.xlarge"]["min_workers"] = c["max_workers"] + 1


@pytest.mark.parametrize("breakage, reason", [
    (_unknown_top_level_key, "'max_worker' was unexpected"),
    (_unknown_node_type_key, "'gpus' was unexpected"),
    (_resources_missing, "'resources' is a required property"),
    (_fractional_gpu, "0.5 is not of type 'integer'"),
    (_unknown_docker_key, "'imag' was unexpected"),
    (_head_type_not_defined, "`head_node_type` must be one of `available_node_types`"),
    (_min_workers_above_global_max, "smaller than the sum of `min_workers`"),
])
def test_broken_copies_fail_validation(config, breakage, reason):
    broken = copy.deepcopy(config)
    breakage(broken)
    with pytest.raises(Exception) as err:
        _validate(broken)
    assert reason in str(err.value).splitlines()[0]


def test_image_is_an_official_ray_cuda_image_matching_installed_ray(config):
    docker = config["docker"]
    images = {docker["image"], docker.get("head_image", docker["image"]), docker.get("worker_image", docker["image"])}
    images |= {t["docker"]["worker_image"] for t in config["available_node_types"].values()
               if "worker_image" in t.get("docker", {})}
    for image in images:
        assert "ray-ml" not in image, "rayproject/ray-ml is discontinued"
        m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-cu(\d{3})", image)
        assert m, f"{image}: expected rayproject/ray:<version>-py<XY>-cu<NNN>"
        # The laptop's Ray (this one) must match the cluster's: ray up / job submit check versions.
        assert m.group(1) == ray.__version__
        assert (m.group(2), m.group(3)) == ("3", "11"), "the project targets Python 3.11"
        assert m.group(4).startswith("12"), "CUDA 12 image expected"


def test_head_runs_no_tasks_and_gpu_types_exist(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "head advertises CPU: 0 so work lands on workers"
    assert not head["resources"].get("GPU")

    workers = _worker_types(config)
    gpu_types = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    instance_types = {v["node_config"]["InstanceType"] for v in gpu_types.values()}
    assert any(t.startswith("g5.") for t in instance_types)
    assert "p4d.24xlarge" in instance_types
    for name, t in gpu_types.items():
        itype = t["node_config"]["InstanceType"]
        assert itype in EC2_GPUS, f"{name}: unknown GPU instance type {itype}"
        assert t["resources"]["GPU"] == EC2_GPUS[itype], f"{name}: {itype} has {EC2_GPUS[itype]} GPU(s)"
        assert t["resources"].get("CPU", 0) >= t["resources"]["GPU"], "at least one CPU per GPU worker"


def test_autoscaling_bounds(config):
    assert config["max_workers"] >= 1
    assert config["idle_timeout_minutes"] > 0
    workers = _worker_types(config)
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"], name
    # Nothing runs (and bills) until a job asks for it.
    assert sum(t["min_workers"] for t in workers.values()) == 0


def test_start_commands_enable_token_auth(config):
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    for cmds in (head, worker):
        assert "RAY_AUTH_MODE=token" in cmds
        assert "ulimit -n 65536" in cmds
        assert 'SBIR_ENV="$(ray-sbir cluster-env)" && eval "$SBIR_ENV" && ray start' in cmds  # Serve's HAProxy ingress on every node (tests/test_cli.py)
    assert "--head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-host=0.0.0.0" in head
    assert "--address=$RAY_HEAD_IP:6379" in worker
    # The token reaches every node from the submitting machine's ~/.ray.
    assert config["file_mounts"].get("/home/ray/.ray") == "~/.ray"


def test_setup_installs_this_project_from_its_file_mount(config):
    mounts = {remote: local for remote, local in config["file_mounts"].items() if local == "."}
    assert len(mounts) == 1, "the working copy is mounted once"
    (remote,) = mounts
    setup = " ".join(config["setup_commands"])
    assert remote in setup and "[pretrained]" in setup and "pip install" in setup
    # Ray stays at the image's version when pip resolves the project's `ray[...]>=` requirement.
    assert "ray.__version__" in setup
    assert ".git" in " ".join(config["rsync_exclude"])


def test_no_credentials_and_every_node_has_an_instance_profile(config):
    with open(CLUSTER_YAML) as f:
        text = f.read()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "an AWS access key id in cluster.yaml"
    dumped = yaml.safe_dump(config).lower()  # keys and values, comments excluded
    for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_credentials"):
        assert key not in dumped, key
    for name, t in config["available_node_types"].items():
        assert "Name" in t["node_config"].get("IamInstanceProfile", {}) or \
            "Arn" in t["node_config"].get("IamInstanceProfile", {}), f"{name}: no instance profile (S3 access)"


def test_docs_cover_every_job_entrypoint():
    with open(os.path.join(REPO, "docs", "cluster.md")) as f:
        docs = f.read()
    jobs = sorted(n for n in os.listdir(os.path.join(REPO, "jobs")) if n.endswith(".py"))
    assert jobs
    for name in jobs:
        assert f"jobs/{name}" in docs, f"docs/cluster.md doesn't show how to submit jobs/{name}"
    for needle in ("ray up cluster.yaml", "ray down cluster.yaml", "RAY_AUTH_MODE=token", "~/.ray/auth_token",
                   "train.max_failures", "train.num_workers", "eval.concurrency"):
        assert needle in docs, needle
