#!/usr/bin/env bash
# The benchmark suite (issues 7 and 16). Builds the workspace in release mode, installs the peer (LiteLLM, pinned) into a
# local virtual environment, runs every scenario — the direct path (client → the fast upstream, a minimal hyper
# responder in the bench crate), nginx as the minimal-proxy floor, the gateway, and LiteLLM side by side; the simulator
# where its behaviour is needed (token endpoint, stampede, memory) — profiles the gateway under callgrind, and writes
# BENCHMARKS.md at the repository root. nginx is Debian's package (`apt-get install nginx`); the suite installs
# nothing itself and skips the nginx rows, with a note, when it is absent.
#
#   bench/run.sh               the full run (about 8 minutes after the build)
#   bench/run.sh --smoke       every scenario for a moment at tiny rates, no peer, no profile; writes
#                              target/bench/BENCHMARKS.smoke.md (BENCHMARKS.md keeps the real figures)
#   bench/run.sh --no-peer     skip LiteLLM
#   bench/run.sh --no-profile  skip the callgrind profile
#   bench/run.sh --only cpu,throughput   only these sections (latency, throughput, cpu, streaming, large, keys,
#                              routes, pool, memory, stampede); writes target/bench/BENCHMARKS.only.md, no peer, no profile
#
# The gateway, the simulator and the peer are started by claude-gateway-bench itself (configs and SQLite stores in
# temp dirs, accounts seeded with `claude-gateway accounts add-key` or straight into the store), so that every
# scenario gets the processes it needs (fresh ones for memory, a slow token endpoint for the stampede).
set -euo pipefail
cd "$(dirname "$0")/.."

LITELLM_VERSION=1.77.7
VENV=target/bench-venv
OUT_DIR=target/bench

smoke=0 peer=1 profile=1 only="" want_only=0
for arg in "$@"; do
  if [ "$want_only" = 1 ]; then only=$arg want_only=0; continue; fi
  case "$arg" in
    --smoke) smoke=1 peer=0 profile=0 ;;
    --no-peer) peer=0 ;;
    --no-profile) profile=0 ;;
    --only) want_only=1 peer=0 profile=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
[ "$want_only" = 0 ] || { echo "bench/run.sh: --only needs a list of sections" >&2; exit 2; }
command="bench/run.sh${*:+ $*}"
mkdir -p "$OUT_DIR"

echo "[run.sh] building the workspace in release mode" >&2
cargo build --release --workspace
bin=target/release

# 1,000 open streams need about 2,000 descriptors in the gateway and 1,000 in each of the client and the simulator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

args=(
  --gateway-bin "$bin/claude-gateway"
  --simulator-bin "$bin/anthropic-simulator"
  --command "$command"
)

if [ "$peer" = 1 ]; then
  note=""
  installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
  if [ "$installed" != "$LITELLM_VERSION" ]; then
    echo "[run.sh] installing litellm[proxy]==$LITELLM_VERSION into $VENV" >&2
    if ! command -v python3 >/dev/null 2>&1; then
      note="python3 is not installed, so LiteLLM $LITELLM_VERSION could not be installed"
    elif ! python3 -m venv "$VENV" >"$OUT_DIR/venv.log" 2>&1; then
      note="python3 -m venv failed: $(tail -n 1 "$OUT_DIR/venv.log")"
    elif ! "$VENV/bin/pip" install --disable-pip-version-check --quiet "litellm[proxy]==$LITELLM_VERSION" \
        >"$OUT_DIR/pip.log" 2>&1; then
      note="pip install litellm[proxy]==$LITELLM_VERSION failed: $(grep -v '^\s*$' "$OUT_DIR/pip.log" | tail -n 1)"
    fi
  fi
  if [ -z "$note" ] && [ -x "$VENV/bin/litellm" ]; then
    args+=(--litellm "$VENV/bin/litellm")
  else
    note="${note:-$VENV/bin/litellm is missing after the installation}"
    echo "[run.sh] LiteLLM unavailable, continuing without it: $note" >&2
    args+=(--litellm-note "$note")
  fi
else
  args+=(--litellm-note "skipped (--no-peer or --smoke)")
fi

if [ "$smoke" = 1 ]; then
  "$bin/claude-gateway-bench" --smoke --out "$OUT_DIR/BENCHMARKS.smoke.md" ${only:+--only "$only"} "${args[@]}"
  exit 0
fi
if [ -n "$only" ]; then
  "$bin/claude-gateway-bench" --only "$only" --out "$OUT_DIR/BENCHMARKS.only.md" "${args[@]}"
  exit 0
fi

if [ "$profile" = 1 ]; then
  if command -v valgrind >/dev/null 2>&1 && command -v callgrind_annotate >/dev/null 2>&1; then
    args+=(--profile "$OUT_DIR/profile")
  else
    args+=(--profile-note "valgrind (callgrind) is not installed: no profile")
  fi
fi

"$bin/claude-gateway-bench" --out BENCHMARKS.md "${args[@]}"
