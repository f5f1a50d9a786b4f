#!/usr/bin/env bash
# Smoke test of a gpu-worker image through its filesystem, for machines that can build images but
# cannot start containers (docs/deploy.md, "Building where no base image can be pulled"):
#
#   infra/docker/smoke.sh localhost/nest-gpu-worker:cpu            # model and corpora from $NEST_HOME
#   infra/docker/smoke.sh --baked localhost/nest-gpu-worker:cpu-baked   # model and corpora in the image
#
# Runs as root (mounts). The image is mounted read-only (`podman image mount`), like the pods'
# readOnlyRootFilesystem; /dev, /proc, /sys are bound in, /tmp and /var/lib/nest/keys are tmpfs
# owned by the image's user (the pods' emptyDirs) and, without --baked, the prepared $NEST_HOME
# (default ~/.cache/nest, `nestlm setup`) is copied, owned by the image's user, and bound read-only at
# /var/lib/nest (the pods' volume, filled as docs/deploy.md step 4 does).
# The image's entrypoint and command run inside `chroot --userspec=<the image's USER>` with exactly
# the image's environment plus: NEST_WORKER_HOST=127.0.0.1, NEST_WORKER_PORT=$SMOKE_PORT (default: a free port),
# a random NEST_POOL_SECRET (the pool's requests are signed as the edge signs them).
#
# Checks, one PASS line each: ready (`gpu-worker ready`, /readyz 200), /healthz, an unsigned request
# refused (401), a signed /v1/retrieve from the factbook corpus, a signed streamed /v1/decode in
# `nest` mode over those passages (≥ 1 `delta` event, ends with `event: done`), /metrics'
# completion-token counter rises by exactly a second generation's tokens; a batch submitted to the
# pool's job API (NEST_BATCH_CONSUME=0) is decoded by the consumer command (`consumer-main.ts
# --concurrency 1`: ready, /readyz, the batch `completed` with a `done` result line), SIGTERM exits
# it 0; SIGTERM to the pool while a generation streams: /readyz stops answering 200, the stream
# still ends with `done`, the pool exits 0. Redis: a private redis-server, else a noeviction Redis
# on 127.0.0.1:6379 under a fresh prefix; neither is a failure.
# Exit status 0 only when every check passed. Needs on the host: podman, curl, openssl, node.
set -euo pipefail

BAKED=0
if [ "${1:-}" = "--baked" ]; then BAKED=1; shift; fi
IMAGE=${1:?usage: infra/docker/smoke.sh [--baked] IMAGE}
HOST_NEST_HOME=${NEST_HOME:-$HOME/.cache/nest}
# Ports: SMOKE_PORT / SMOKE_OPS_PORT / SMOKE_REDIS_PORT, else free ones the kernel picks (a shared
# machine may already run a pool on 8788/18788).
free_port() { node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
PORT=${SMOKE_PORT:-$(free_port)}
OPS_PORT=${SMOKE_OPS_PORT:-$(free_port)}
REDIS_PORT=${SMOKE_REDIS_PORT:-$(free_port)}
READY_TIMEOUT_S=${SMOKE_READY_TIMEOUT_S:-300}

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/nest-smoke.XXXXXX")
VOLUME="$WORK/volume"
MNT=""
MOUNTS=()
PIDS=()
REDIS_PID=""
REDIS_URL=""
PREFIX="nest-smoke-$(openssl rand -hex 4)"
SECRET=$(openssl rand -hex 24)
T0=$(date +%s)

log() { echo "smoke: $*"; }
pass() { echo "PASS $*"; }
fail() {
  echo "FAIL $*" >&2
  for f in "$WORK"/*.log; do
    [ -s "$f" ] || continue
    echo "---- tail of $(basename "$f")" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}

stop_pid() { # pid: SIGTERM, 20 s, then SIGKILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; wait "$pid" 2>/dev/null; done
  if [ -n "$REDIS_PID" ]; then
    stop_pid "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null
  elif [ -n "$REDIS_URL" ]; then # the shared Redis: remove what this run's prefix created
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
  fi
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
  done
  [ -n "$MNT" ] && podman image unmount "$IMAGE" >/dev/null
  rm -rf "$WORK"
  echo "smoke: $([ "$rc" -eq 0 ] && echo PASSED || echo FAILED) $IMAGE in $(($(date +%s) - T0)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mnt() { # mount args… target (last): records the target for cleanup
  mount "$@"
  MOUNTS+=("${!#}")
}

# ---- the image's configuration
podman image exists "$IMAGE" || fail "no image $IMAGE (podman images)"
fmt() { podman image inspect --format "$1" "$IMAGE"; }
mapfile -t IMAGE_ENV < <(fmt '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t ENTRYPOINT < <(fmt '{{range .Config.Entrypoint}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t CMD < <(fmt '{{range .Config.Cmd}}{{println .}}{{end}}' | sed '/^$/d')
WORKDIR=$(fmt '{{.Config.WorkingDir}}')
USERSPEC=$(fmt '{{.Config.User}}')
[ -n "$USERSPEC" ] && [ "${USERSPEC%%:*}" != 0 ] || fail "image user is '${USERSPEC}': expected a non-root USER uid:gid"
[ "${#ENTRYPOINT[@]}" -gt 0 ] && [ "${#CMD[@]}" -gt 0 ] || fail "image has no ENTRYPOINT/CMD"
UID_=${USERSPEC%%:*}
GID_=${USERSPEC#*:}
log "image $IMAGE: user $USERSPEC, workdir $WORKDIR, command ${ENTRYPOINT[*]} ${CMD[*]}"

# ---- the filesystem: image read-only, the pod's volumes around it
MNT=$(podman image mount "$IMAGE")
[ -d "$MNT/app" ] || fail "podman image mount gave no /app in $MNT"
mnt --bind /dev "$MNT/dev"
mount -t proc proc "$MNT/proc" 2>/dev/null && MOUNTS+=("$MNT/proc") || mnt --rbind /proc "$MNT/proc"
mnt --bind -o ro /sys "$MNT/sys"
mnt -t tmpfs -o "mode=1777,size=256m" tmpfs "$MNT/tmp"
if [ "$BAKED" -eq 0 ]; then
  # The volume as step 4 of docs/deploy.md fills it: models/ and corpora/ of the prepared home,
  # owned by the image's user (LanceDB writes its files 0600, so a root-owned copy is unreadable).
  [ -d "$HOST_NEST_HOME/models" ] && [ -d "$HOST_NEST_HOME/corpora" ] \
    || fail "$HOST_NEST_HOME has no models/ and corpora/: run \`node bin/nestlm.mjs setup\` first"
  t=$(date +%s)
  mkdir -p "$VOLUME/keys"
  cp -a "$HOST_NEST_HOME/models" "$HOST_NEST_HOME/corpora" "$VOLUME/"
  chown -R "$UID_:$GID_" "$VOLUME"
  log "volume: models/ and corpora/ of $HOST_NEST_HOME copied, owned by $USERSPEC ($(du -sh "$VOLUME" | cut -f1), $(($(date +%s) - t)) s)"
  mnt --bind "$VOLUME" "$MNT/var/lib/nest"
  mount -o remount,bind,ro "$MNT/var/lib/nest"
fi
mnt -t tmpfs -o "mode=0755,uid=$UID_,gid=$GID_,size=2g" tmpfs "$MNT/var/lib/nest/keys"
ls "$MNT"/var/lib/nest/models/*/ >/dev/null 2>&1 || fail "no model under /var/lib/nest/models in the image's view"

# Runs the image's entrypoint with the given arguments as the image's user, in its environment.
run_in_image() { # logfile env-overrides… -- args…
  local logf=$1
  shift
  local extra=()
  while [ "$1" != "--" ]; do extra+=("$1"); shift; done
  shift
  chroot --userspec="$USERSPEC" --groups="$GID_" "$MNT" /usr/bin/env -i -C "$WORKDIR" \
    "${IMAGE_ENV[@]}" "${extra[@]}" "${ENTRYPOINT[@]}" "$@" >"$logf" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

wait_for() { # pid logfile pattern url: until the line is printed and the url answers 200
  local pid=$1 logf=$2 pattern=$3 url=$4 deadline=$(($(date +%s) + READY_TIMEOUT_S))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || fail "process exited before '$pattern' (see its log)"
    if grep -qs "$pattern" "$logf" && [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ]; then return 0; fi
    sleep 0.5
  done
  fail "no '$pattern' within ${READY_TIMEOUT_S} s"
}

# curl with the edge's HMAC headers (shared/src/protocol/hmac.ts): hex HMAC-SHA256 of
# "<ts>.<nonce>\n<METHOD>\n<path>\n<body>".
signed() { # METHOD path body [outfile] → response body into outfile (else stdout), HTTP status in $WORK/status
  local method=$1 path=$2 body=$3 out=${4:-$WORK/body} ts nonce sig
  ts=$(date +%s)
  nonce=$(openssl rand -hex 16)
  sig=$(printf '%s.%s\n%s\n%s\n%s' "$ts" "$nonce" "$method" "$path" "$body" | openssl dgst -sha256 -hmac "$SECRET" | awk '{print $NF}')
  local data=()
  [ "$method" = GET ] || data=(-H 'content-type: application/json' --data-binary "$body")
  curl -sS -N -X "$method" -o "$out" -w '%{http_code}' --max-time 300 \
    -H "x-nest-timestamp: $ts" -H "x-nest-nonce: $nonce" -H "x-nest-signature: $sig" \
    "${data[@]}" "http://127.0.0.1:$PORT$path" >"$WORK/status"
  [ -n "${4:-}" ] || cat "$out"
}
status() { cat "$WORK/status"; }

# Parses an SSE stream file: fails unless it holds ≥ 1 `delta` event and ends with `done`; prints a
# summary line, then the completion token count.
sse_summary() { # file
  node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8");
    const events = text.split(/\r?\n\r?\n/).filter((b) => b.trim()).map((b) => {
      const ev = (b.match(/^event: (.*)$/m) || [])[1];
      const data = b.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      return { ev, data: data ? JSON.parse(data) : undefined };
    });
    const deltas = events.filter((e) => e.ev === "delta");
    const last = events[events.length - 1];
    if (deltas.length === 0 || !last || last.ev !== "done") { console.error(`events: ${events.map((e) => e.ev).join(",")}`); process.exit(1); }
    const u = last.data.usage;
    if (!(u.completion_tokens > 0)) { console.error(`done event without completion tokens: ${JSON.stringify(last.data)}`); process.exit(1); }
    console.log(`${deltas.length} delta events, done (${last.data.finish_reason}, ${u.completion_tokens} tokens, mode ${last.data.mode}): ${JSON.stringify(deltas.map((d) => d.data.text).join(""))}`);
    console.log(u.completion_tokens);
  ' "$1"
}

# ---- Redis for the batch job API and the consumer: a private redis-server, else the shared one
# on 127.0.0.1:6379 (noeviction, as the consumer demands) under this run's prefix.
if command -v redis-server >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --maxmemory-policy noeviction \
    >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  for _ in $(seq 1 50); do redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
elif redis-cli -h 127.0.0.1 -p 6379 config get maxmemory-policy 2>/dev/null | grep -qx noeviction; then
  REDIS_URL="redis://127.0.0.1:6379"
else
  fail "no redis-server here and no noeviction Redis on 127.0.0.1:6379 (the batch checks need one)"
fi
redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG || fail "Redis $REDIS_URL does not answer"

# ---- 1. the HTTP pool (the image's default command), with the batch job API on, decoding left to
# the consumers (NEST_BATCH_CONSUME=0), as the HTTP pool Deployment runs
URL="http://127.0.0.1:$PORT"
t=$(date +%s)
run_in_image "$WORK/worker.log" NEST_WORKER_HOST=127.0.0.1 "NEST_WORKER_PORT=$PORT" "NEST_POOL_SECRET=$SECRET" \
  "NEST_REDIS_URL=$REDIS_URL" "NEST_BATCH_PREFIX=$PREFIX" NEST_BATCH_CONSUME=0 -- "${CMD[@]}"
WORKER_PID=$LAST_PID
wait_for "$WORKER_PID" "$WORK/worker.log" "^gpu-worker ready" "$URL/readyz"
pass "worker ready in $(($(date +%s) - t)) s: $(grep -m1 '^gpu-worker ready' "$WORK/worker.log"); /readyz 200"

health=$(curl -sS --max-time 10 "$URL/healthz")
node -e 'const h = JSON.parse(process.argv[1]); if (h.status !== "ok" || !h.model) process.exit(1)' "$health" \
  || fail "/healthz: $health"
pass "/healthz: $health"

code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' --data-binary '{}' "$URL/v1/decode")
[ "$code" = 401 ] || fail "unsigned POST /v1/decode answered $code, expected 401"
pass "unsigned POST /v1/decode refused: 401"

QUESTION="What is the capital of Australia?"
body=$(node -e 'process.stdout.write(JSON.stringify({ query: process.argv[1], corpus: "factbook", passages: 5 }))' "$QUESTION")
passages=$(signed POST /v1/retrieve "$body")
[ "$(status)" = 200 ] || fail "POST /v1/retrieve: HTTP $(status) $passages"
n=$(node -e 'const r = JSON.parse(process.argv[1]); console.log(r.passages.length)' "$passages")
[ "$n" -gt 0 ] || fail "POST /v1/retrieve: no passages"
pass "signed POST /v1/retrieve (factbook, LanceDB): $n passages, first: $(node -e 'console.log(JSON.parse(process.argv[1]).passages[0].title)' "$passages")"

decode_job() { # max_new_tokens → the /v1/decode body over the retrieved passages
  node -e '
    const p = JSON.parse(process.argv[2]).passages;
    process.stdout.write(JSON.stringify({ request: { prompt: process.argv[1], mode: "nest", max_new_tokens: Number(process.argv[3]), passages: p.length }, passages: p }));
  ' "$QUESTION" "$passages" "$1"
}
t=$(date +%s)
signed POST /v1/decode "$(decode_job 16)" "$WORK/sse"
[ "$(status)" = 200 ] || fail "POST /v1/decode: HTTP $(status) $(head -c 500 "$WORK/sse")"
summary=$(sse_summary "$WORK/sse") || fail "SSE stream of /v1/decode: $(head -c 800 "$WORK/sse")"
completion_tokens=$(tail -n 1 <<<"$summary")
pass "signed streamed POST /v1/decode in $(($(date +%s) - t)) s: $(head -n 1 <<<"$summary")"

# The warm-up generation (readiness) counts too: compare the counter's increase over this request.
metric_sum() { awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $NF } END { print s + 0 }'; }
metrics=$(curl -sS --max-time 10 "$URL/metrics")
counted=$(metric_sum nest_worker_completion_tokens_total <<<"$metrics")
signed POST /v1/decode "$(decode_job 8)" "$WORK/sse2"
[ "$(status)" = 200 ] || fail "second POST /v1/decode: HTTP $(status)"
second=$(sse_summary "$WORK/sse2" | tail -n 1) || fail "SSE stream of the second /v1/decode: $(head -c 800 "$WORK/sse2")"
metrics=$(curl -sS --max-time 10 "$URL/metrics")
after=$(metric_sum nest_worker_completion_tokens_total <<<"$metrics")
[ "$((after - counted))" = "$second" ] \
  || fail "/metrics nest_worker_completion_tokens_total rose by $((after - counted)) over a generation whose usage says $second"
pass "/metrics: $(grep -c '^nest_' <<<"$metrics") nest_ samples; nest_worker_completion_tokens_total rose by $second over a ${second}-token generation (total $after, first generation $completion_tokens)"

# ---- 2. the batch consumer command (same image, other command) decodes a job submitted through the pool's job API
item=$(node -e 'process.stdout.write(JSON.stringify({ custom_id: "smoke-1", prompt: process.argv[1], mode: "nest", corpus: "factbook", max_new_tokens: 12 }))' "$QUESTION")
submitted=$(signed POST /v1/batches "$item")
[ "$(status)" = 201 ] || fail "POST /v1/batches: HTTP $(status) $submitted"
BATCH_ID=$(node -e 'console.log(JSON.parse(process.argv[1]).id)' "$submitted")
pass "signed POST /v1/batches: 201, $BATCH_ID queued (the pool does not consume: NEST_BATCH_CONSUME=0)"

mapfile -t CONSUMER_CMD < <(printf '%s\n' gpu-worker/src/batch/consumer-main.ts --concurrency 1)
t=$(date +%s)
run_in_image "$WORK/consumer.log" "NEST_REDIS_URL=$REDIS_URL" "NEST_BATCH_PREFIX=$PREFIX" \
  "NEST_METRICS_PORT=$OPS_PORT" NEST_METRICS_HOST=127.0.0.1 -- "${CONSUMER_CMD[@]}"
CONSUMER_PID=$LAST_PID
wait_for "$CONSUMER_PID" "$WORK/consumer.log" "^batch consumer ready" "http://127.0.0.1:$OPS_PORT/readyz"
pass "batch consumer ready in $(($(date +%s) - t)) s: $(grep -m1 '^batch consumer ready' "$WORK/consumer.log"); /readyz 200"

t=$(date +%s)
deadline=$((t + READY_TIMEOUT_S))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  st=$(signed GET "/v1/batches/$BATCH_ID" "")
  [ "$(status)" = 200 ] || fail "GET /v1/batches/$BATCH_ID: HTTP $(status) $st"
  state=$(node -e 'console.log(JSON.parse(process.argv[1]).status)' "$st")
  [ "$state" = completed ] && break
  kill -0 "$CONSUMER_PID" 2>/dev/null || fail "batch consumer exited while $BATCH_ID was $state"
  sleep 0.5
done
[ "$state" = completed ] || fail "$BATCH_ID still $state after ${READY_TIMEOUT_S} s: $st"
results=$(signed GET "/v1/batches/$BATCH_ID/results" "")
[ "$(status)" = 200 ] || fail "GET /v1/batches/$BATCH_ID/results: HTTP $(status) $results"
line=$(node -e '
  const lines = process.argv[1].split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  const r = lines[0];
  if (lines.length !== 1 || r.status !== "done" || r.custom_id !== "smoke-1" || !r.text || !(r.usage.completion_tokens > 0)) {
    console.error(process.argv[1]); process.exit(1);
  }
  console.log(`${r.custom_id} done (${r.usage.completion_tokens} tokens, ${r.citations.length} citations, attempt ${r.attempts}): ${JSON.stringify(r.text)}`);
' "$results") || fail "batch results: $results"
pass "batch consumer decoded $BATCH_ID in $(($(date +%s) - t)) s: $line"
grep -q "^nest_batch_queue_jobs" <(curl -sS --max-time 10 "http://127.0.0.1:$OPS_PORT/metrics") \
  || fail "consumer /metrics has no nest_batch_queue_jobs"
pass "consumer /metrics: nest_batch_queue_jobs present"

kill -TERM "$CONSUMER_PID"
rc=0
wait "$CONSUMER_PID" || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: batch consumer exited $rc"
pass "SIGTERM: batch consumer exited 0"

# ---- 3. SIGTERM while a generation streams: readiness drops, the stream still ends with `done`, exit 0
signed POST /v1/decode "$(decode_job 96)" "$WORK/sse-drain" &
CURL_PID=$!
deadline=$(($(date +%s) + 60))
until grep -qs "^event: delta" "$WORK/sse-drain"; do
  kill -0 "$CURL_PID" 2>/dev/null || fail "the drain test's generation ended before its first delta: $(head -c 500 "$WORK/sse-drain")"
  [ "$(date +%s)" -lt "$deadline" ] || fail "the drain test's generation streamed nothing in 60 s"
  sleep 0.05
done
! grep -qs "^event: done" "$WORK/sse-drain" || fail "the drain test's generation finished before SIGTERM: nothing was in flight"
kill -TERM "$WORKER_PID"
# /readyz leaves 200 once the signal is handled (503 while draining, or no new connections).
ready_during_drain=200
for _ in $(seq 1 50); do
  ready_during_drain=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/readyz" || true)
  [ "$ready_during_drain" = 200 ] || break
  sleep 0.1
done
wait "$CURL_PID" || fail "the in-flight generation's request failed during the drain"
[ "$(status)" = 200 ] || fail "in-flight POST /v1/decode during the drain: HTTP $(status)"
drained=$(sse_summary "$WORK/sse-drain" | head -n 1) || fail "in-flight stream cut by SIGTERM: $(tail -c 400 "$WORK/sse-drain")"
rc=0
wait "$WORKER_PID" || rc=$?
[ "$rc" = 0 ] && grep -q "SIGTERM: draining" "$WORK/worker.log" && grep -q "gpu-worker stopped" "$WORK/worker.log" \
  || fail "SIGTERM: worker exited $rc without 'SIGTERM: draining' … 'gpu-worker stopped'"
case "$ready_during_drain" in 200) fail "/readyz still 200 after SIGTERM" ;; esac
pass "SIGTERM mid-generation: /readyz ${ready_during_drain:-refused} while draining, the stream finished ($drained), worker exited 0"
