#!/usr/bin/env bash
# Creates .venv (Python 3.11) with torch, detectron2 and evad-d2 (editable). Idempotent: when
# nothing this script depends on changed since the last successful run, it returns in seconds.
#
# detectron2 is not on PyPI. EVAD_DETECTRON2 picks how it is obtained:
#   auto   (default) keep an importable detectron2; else build the official source when GitHub is
#          reachable; else the PyPI repackage sal-detectron2==0.7.2 as pure Python.
#   keep   only use a detectron2 that is already importable (fail otherwise).
#   source build the official source (DETECTRON2_SOURCE: a git URL or a local checkout).
#   pypi   the PyPI repackage of official detectron2 0.7.2, installed as pure Python.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EVAD_DETECTRON2=${EVAD_DETECTRON2:-auto}
DETECTRON2_SOURCE=${DETECTRON2_SOURCE:-https://github.com/facebookresearch/detectron2.git}
PIP_QUIET=${PIP_QUIET:--q}

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

hash=$(cat scripts/setup_env.sh requirements.txt setup.py | sha256sum | cut -c1-16)
stamp="$VENV/.evad-setup-$hash"
if [ -f "$stamp" ] && "$VENV/bin/python" -c "import evad_d2" >/dev/null 2>&1; then
    say "environment in $VENV is up to date"
    exit 0
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set PYTHON=/path/to/python3.11"
if [ ! -x "$VENV/bin/python" ]; then
    # A detectron2 installed for the base interpreter is kept: the venv is allowed to see it.
    if "$PYTHON" -c "import detectron2" >/dev/null 2>&1; then
        say "using the detectron2 already installed for $PYTHON (venv with system site-packages)"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install $PIP_QUIET --disable-pip-version-check "$@"; }

if "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
    say "keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    say "installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    pip_install $TORCH_SPEC
fi
say "installing requirements.txt"
pip_install -r requirements.txt

have_d2() { "$PY" -c "import detectron2, detectron2.modeling, detectron2.engine" >/dev/null 2>&1; }

install_d2_source() {
    say "building detectron2 from $DETECTRON2_SOURCE"
    case "$DETECTRON2_SOURCE" in
        http*|git*) pip_install --no-build-isolation "git+$DETECTRON2_SOURCE" ;;
        *) pip_install --no-build-isolation "$DETECTRON2_SOURCE" ;;
    esac
}

install_d2_pypi() {
    # The wheel is tagged cp310 only; its code is pure Python except a 3.10-only _C extension
    # that other Pythons ignore (EVAD needs none of those ops: RoIAlign/NMS come from torchvision).
    say "installing detectron2 0.7.2 from the PyPI repackage sal-detectron2 (pure Python)"
    mkdir -p wheels
    "$PY" -m pip download $PIP_QUIET --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.10 -d wheels sal-detectron2==0.7.2
    local src
    src=$(ls wheels/sal_detectron2-0.7.2-*.whl | grep -v py3-none-any | head -n 1)
    cp "$src" wheels/sal_detectron2-0.7.2-py3-none-any.whl
    pip_install --no-deps --force-reinstall wheels/sal_detectron2-0.7.2-py3-none-any.whl
}

github_reachable() {
    timeout 15 git ls-remote "$DETECTRON2_SOURCE" HEAD >/dev/null 2>&1
}

case "$EVAD_DETECTRON2" in
    keep) have_d2 || die "EVAD_DETECTRON2=keep but detectron2 is not importable from $PY" ;;
    source) install_d2_source ;;
    pypi) install_d2_pypi ;;
    auto)
        if have_d2; then
            say "keeping detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)')"
        elif github_reachable && install_d2_source && have_d2; then
            say "built the official detectron2 source"
        else
            install_d2_pypi
        fi ;;
    *) die "unknown EVAD_DETECTRON2=$EVAD_DETECTRON2 (auto, keep, source, pypi)" ;;
esac
have_d2 || die "detectron2 could not be installed. Install it yourself (see README: 'Installing detectron2') and rerun with EVAD_DETECTRON2=keep."

say "installing evad-d2 (editable)"
pip_install --no-deps --no-build-isolation -e .
"$PY" -c "import evad_d2" || die "evad_d2 does not import"
rm -f "$VENV"/.evad-setup-*
touch "$stamp"
say "done: $("$PY" -c 'import torch, detectron2; print("torch", torch.__version__, "| detectron2", detectron2.__version__)')"
