#!/usr/bin/env bash
# Generation speed and memory of `microscale generate` against llama.cpp's own `llama-completion`
# on the same file, prompt and settings, run alternately (so that a noisy machine slows both):
# tokens/s as each tool reports it (prompt and generation), whole-process wall time and peak RSS
# (from wait4), and the ratio microscale / llama-completion of each median.
#
#   scripts/bench-generate.sh [MODEL.gguf] [RUNS]
#
# Defaults: the default model's Q4_1 GGUF, 5 runs each. Greedy, 128 tokens of a plain-text prompt,
# 2 threads, llama-completion's default context (4096) on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
RUNS=${2:-5}
THREADS=${THREADS:-2}
scripts/setup.sh
scripts/fetch-default-model.sh >/dev/null
cargo build --release --quiet
TOOLS=$(scripts/build-llama-tools.sh)

MS=${CARGO_TARGET_DIR:-target}/release/microscale

python3 - "$MODEL" "$RUNS" "$THREADS" "$TOOLS" "$MS" <<'EOF'
import json, os, re, statistics, subprocess, sys, time
model, runs, threads, tools, ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
prompt = "The history of the Roman Empire"
ours = [ms, "generate", model, "-p", prompt, "--temp", "0", "-n", "128",
        "-t", threads, "--json", "-q"]
theirs = [os.path.join(tools, "llama-completion"), "-m", model, "-no-cnv", "-p", prompt, "--temp", "0",
          "-n", "128", "-t", threads, "--ignore-eos"]

def run_measured(cmd):
    # wait4 gives the child's own peak RSS (ru_maxrss, KiB on Linux).
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        fd_out = os.open(f"/tmp/bench-generate-{os.getpid()}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        fd_err = os.open(f"/tmp/bench-generate-{os.getpid()}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    out = open(f"/tmp/bench-generate-{pid}.out", errors="replace").read()
    err = open(f"/tmp/bench-generate-{pid}.err", errors="replace").read()
    os.remove(f"/tmp/bench-generate-{pid}.out")
    os.remove(f"/tmp/bench-generate-{pid}.err")
    if status != 0:
        sys.exit(f"{cmd[0]} failed: {err[-500:]}")
    return out, err, wall, usage.ru_maxrss / 1024

def ours_tps(out, err):
    r = json.loads(out)
    return r["prompt_tps"], r["generation_tps"], r["generated_tokens"]

def theirs_tps(out, err):
    pp = re.search(r"prompt eval time =.*?([\d.]+) tokens per second", err)
    tg = re.search(r"\beval time =.*?/\s*(\d+) runs.*?([\d.]+) tokens per second", err)
    return float(pp.group(1)), float(tg.group(2)), int(tg.group(1)) + 1

rows = {"microscale generate": [], "llama-completion": []}
run_measured(ours); run_measured(theirs)  # warm-up: page cache, CPU frequency
for _ in range(runs):
    for name, cmd, parse in (("microscale generate", ours, ours_tps), ("llama-completion", theirs, theirs_tps)):
        out, err, wall, rss = run_measured(cmd)
        pp, tg, n = parse(out, err)
        rows[name].append((pp, tg, n, wall, rss))

med = lambda name, i: statistics.median(r[i] for r in rows[name])
print(f"model {model}, {threads} threads, greedy, 128 tokens after a {prompt!r} prompt, {runs} runs each, alternating")
print()
print("| tool | prompt t/s | generation t/s | tokens | wall s | peak RSS MiB |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name in rows:
    print(f"| {name} | {med(name, 0):.1f} | {med(name, 1):.1f} | {med(name, 2):.0f} | {med(name, 3):.3f} | {med(name, 4):.0f} |")
a, b = "microscale generate", "llama-completion"
print(f"| ratio (microscale / llama-completion) | {med(a, 0) / med(b, 0):.3f} | {med(a, 1) / med(b, 1):.3f} | "
      f"| {med(a, 3) / med(b, 3):.3f} | {med(a, 4) / med(b, 4):.3f} |")
EOF
