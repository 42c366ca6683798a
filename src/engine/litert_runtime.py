"""Run a LiteRT model through the LiteRT interpreter (ai-edge-litert), for microscale.

`python litert_runtime.py MODEL MODE` with a JSON request on stdin:
- logits: {"windows": [[token, ...], ...], "first": F, "n_vocab": V, "threads": T}. Each window runs through the
  prefill signature of its length (a fresh, zeroed KV cache each time); for each window the logits
  of positions F .. end-1 (each predicting the next token) are written to stdout as float32,
  little-endian, row after row: microscale scores them as it scores llama.cpp's (perplexity, KL
  divergence), on the same windows.
- generate: {"prompt": [...], "n": N, "stop": [...], "threads": T} -> {"tokens": [...]}, greedy.
- bench: {"n_prompt": P, "n_gen": G, "reps": R, "threads": T} -> {"load_s", "pp_tps": [...],
  "tg_tps": [...], "peak_rss_kib"}: llama-bench's two tests, a prompt of P tokens through
  `prefill_P`, then G tokens one at a time through `decode`, after one warm-up of each.
"""

import json
import resource
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def prefill_lengths(it: Interpreter) -> list:
    return sorted(int(k.split("_")[1]) for k in it.get_signature_list() if k.startswith("prefill_"))


def prefill_runner(it: Interpreter, length: int):
    if length not in prefill_lengths(it):
        have = ", ".join(f"prefill_{n}" for n in prefill_lengths(it))
        sys.exit(f"litert: no prefill signature of {length} tokens (the file has {have})")
    return it.get_signature_runner(f"prefill_{length}")


def zero_cache(runner) -> dict:
    return {
        k: np.zeros(v["shape"], dtype=v["dtype"])
        for k, v in runner.get_input_details().items()
        if k.startswith("kv_cache_")
    }


def kept_cache(result: dict) -> dict:
    return {k: v for k, v in result.items() if k.startswith("kv_cache_")}


def prefill(runner, tokens: list, cache: dict) -> dict:
    return runner(
        tokens=np.array([tokens], dtype=np.int32), input_pos=np.arange(len(tokens), dtype=np.int32), **cache
    )


def decode_one(runner, token: int, pos: int, cache: dict) -> dict:
    return runner(tokens=np.array([[token]], dtype=np.int32), input_pos=np.array([pos], dtype=np.int32), **cache)


def logits(it: Interpreter, req: dict) -> None:
    first, windows = req["first"], req["windows"]
    # Every window has the same length (eval's --ctx-size): one signature serves them all.
    runner = prefill_runner(it, len(windows[0])) if windows else None
    out = sys.stdout.buffer
    width = runner.get_output_details()["logits"]["shape"][-1] if runner else req["n_vocab"]
    if width != req["n_vocab"]:
        sys.exit(f"litert: the file's logits are {width} wide, the tokenizer's vocabulary has {req['n_vocab']} tokens")
    for w in windows:
        res = prefill(runner, w, zero_cache(runner))
        out.write(np.ascontiguousarray(res["logits"][0][first:-1], dtype="<f4").tobytes())
        out.flush()


def generate(it: Interpreter, req: dict) -> dict:
    prompt, n = req["prompt"], req["n"]
    lengths = prefill_lengths(it)
    length = next((p for p in lengths if p >= len(prompt)), None)
    if length is None:
        sys.exit(f"litert generate: a prompt of {len(prompt)} tokens is longer than every prefill signature ({lengths})")
    runner = prefill_runner(it, length)
    res = prefill(runner, prompt + [0] * (length - len(prompt)), zero_cache(runner))
    cache = kept_cache(res)
    nxt = int(np.argmax(res["logits"][0][len(prompt) - 1]))
    decode = it.get_signature_runner("decode")
    out = [nxt]
    pos = len(prompt)
    while len(out) < n and nxt not in req.get("stop", []):
        res = decode_one(decode, nxt, pos, cache)
        cache = kept_cache(res)
        nxt = int(np.argmax(res["logits"][0][-1]))
        out.append(nxt)
        pos += 1
    return {"tokens": out}


def bench(model: str, req: dict) -> dict:
    threads, n_prompt, n_gen = int(req["threads"]), req["n_prompt"], req["n_gen"]
    started = time.perf_counter()
    it = Interpreter(model_path=model, num_threads=threads)
    runner = prefill_runner(it, n_prompt)
    decode = it.get_signature_runner("decode")
    load_s = time.perf_counter() - started
    cache_len = min(v["shape"][1] for k, v in runner.get_input_details().items() if k.startswith("kv_cache_"))
    if n_prompt + n_gen > cache_len:
        sys.exit(f"litert bench: {n_prompt} + {n_gen} tokens do not fit the file's KV cache of {cache_len}")
    # Tokens as llama-bench draws them: any from the vocabulary, seeded.
    rng = np.random.default_rng(42)
    n_vocab = runner.get_output_details()["logits"]["shape"][-1]
    pp, tg = [], []
    for rep in range(req["reps"] + 1):
        prompt = rng.integers(0, n_vocab, n_prompt).tolist()
        t = time.perf_counter()
        res = prefill(runner, prompt, zero_cache(runner))
        pp_s = time.perf_counter() - t
        cache, nxt = kept_cache(res), int(np.argmax(res["logits"][0][-1]))
        t = time.perf_counter()
        for i in range(n_gen):
            res = decode_one(decode, nxt, n_prompt + i, cache)
            cache, nxt = kept_cache(res), int(np.argmax(res["logits"][0][-1]))
        tg_s = time.perf_counter() - t
        if rep > 0:  # the first round warms up
            pp.append(n_prompt / pp_s)
            tg.append(n_gen / tg_s)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    return {"load_s": load_s, "pp_tps": pp, "tg_tps": tg, "peak_rss_kib": peak}


def main() -> None:
    model, mode = sys.argv[1], sys.argv[2]
    req = json.load(sys.stdin)
    if mode == "bench":
        print(json.dumps(bench(model, req)))
        return
    it = Interpreter(model_path=model, num_threads=int(req.get("threads", 1)))
    if mode == "logits":
        logits(it, req)
    else:
        print(json.dumps(generate(it, req)))


if __name__ == "__main__":
    main()
