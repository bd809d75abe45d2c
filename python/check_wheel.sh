#!/usr/bin/env bash
# Builds the wheel (profile $1: debug for `make test`, release for `make wheel`), installs it into a new, empty
# virtual environment and runs the README's Python example there: what a user gets from `pip install`.
set -euo pipefail
PROFILE="${1:-release}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/target/wheels"
FLAGS=()
[ "$PROFILE" = release ] && FLAGS+=(--release)
rm -f "$OUT"/tokensieve-*.whl
# `--auditwheel repair` rewrites the NEEDED entries of cargo's own artifact (target/<profile>/lib_native.so) to the
# hashed copies that exist only inside the wheel, and a later `maturin develop` in this tree would install that
# library unchanged (so a second `make test` failed to import it). Touching the crate afterwards makes the next build
# relink it.
trap 'touch "$ROOT/python/src/lib.rs"' EXIT
maturin build --quiet "${FLAGS[@]}" -m "$ROOT/python/Cargo.toml" --auditwheel repair -o "$OUT"
WHEEL="$(ls "$OUT"/tokensieve-*.whl)"
VENV="$ROOT/target/wheel-venv"
rm -rf "$VENV"
python -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "$WHEEL"
# The README's numpy example, verbatim (between its python-example markers).
EXAMPLE="$(sed -n '/<!-- python-example:start -->/,/<!-- python-example:end -->/p' "$ROOT/README.md" | sed '/^```/d;/^<!--/d')"
[ -n "$EXAMPLE" ] || { echo "check_wheel: README.md has no python-example block" >&2; exit 1; }
(cd "$VENV" && "$VENV/bin/python" -c "$EXAMPLE")
echo "check_wheel: $(basename "$WHEEL") installs into a clean environment and runs the README example"
