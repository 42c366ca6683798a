"""Score token windows with a LiteRT model through the LiteRT interpreter (ai-edge-litert).

Run by `microscale eval MODEL.tflite`: reads {"windows": [[token, ...], ...], "first": F,
"threads": T} on stdin, runs each window through the prefill signature whose length is the
window's (a fresh, zeroed KV cache each time), and prints {"nll": [[...], ...]}: for every window
the negative log-likelihood of tokens F+1 .. end, each predicted from the positions before it —
the tokens and the scoring of llama-perplexity, so the result sits beside the GGUF's.
Also `--generate`: {"prompt": [...], "n": N} → greedy continuation {"tokens": [...]}.
"""

import json
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def prefill_runner(it: Interpreter, length: int):
    sigs = it.get_signature_list()
    name = f"prefill_{length}"
    if name not in sigs:
        have = sorted(k for k in sigs if k.startswith("prefill"))
        sys.exit(f"litert eval: no prefill signature of {length} tokens (the file has {', '.join(have)})")
    return it.get_signature_runner(name)


def zero_cache(runner) -> dict:
    return {
        k: np.zeros(v["shape"], dtype=v["dtype"])
        for k, v in runner.get_input_details().items()
        if k.startswith("kv_cache_")
    }


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def score(it: Interpreter, req: dict) -> dict:
    first, windows = req["first"], req["windows"]
    out = []
    # Every window has the same length (eval's --ctx-size): one signature serves them all.
    runner = prefill_runner(it, len(windows[0])) if windows else None
    for w in windows:
        tokens = np.array([w], dtype=np.int32)
        pos = np.arange(len(w), dtype=np.int32)
        res = runner(tokens=tokens, input_pos=pos, **zero_cache(runner))
        lp = log_softmax(res["logits"][0][first:-1])
        nxt = np.array(w[first + 1 :])
        out.append((-lp[np.arange(len(nxt)), nxt]).tolist())
    return {"nll": out}


def generate(it: Interpreter, req: dict) -> dict:
    prompt, n = req["prompt"], req["n"]
    sigs = it.get_signature_list()
    prefills = sorted(int(k.split("_")[1]) for k in sigs if k.startswith("prefill_"))
    length = next((p for p in prefills if p >= len(prompt)), None)
    if length is None:
        sys.exit(f"litert generate: a prompt of {len(prompt)} tokens is longer than every prefill signature ({prefills})")
    runner = prefill_runner(it, length)
    padded = prompt + [0] * (length - len(prompt))
    cache = zero_cache(runner)
    res = runner(tokens=np.array([padded], dtype=np.int32), input_pos=np.arange(length, dtype=np.int32), **cache)
    cache = {k: v for k, v in res.items() if k.startswith("kv_cache_")}
    nxt = int(np.argmax(res["logits"][0][len(prompt) - 1]))
    decode = it.get_signature_runner("decode")
    out = [nxt]
    pos = len(prompt)
    while len(out) < n and nxt not in req.get("stop", []):
        res = decode(tokens=np.array([[nxt]], dtype=np.int32), input_pos=np.array([pos], dtype=np.int32), **cache)
        cache = {k: v for k, v in res.items() if k.startswith("kv_cache_")}
        nxt = int(np.argmax(res["logits"][0][-1]))
        out.append(nxt)
        pos += 1
    return {"tokens": out}


def main() -> None:
    model, mode = sys.argv[1], sys.argv[2]
    req = json.load(sys.stdin)
    it = Interpreter(model_path=model, num_threads=int(req.get("threads", 1)))
    print(json.dumps(score(it, req) if mode == "score" else generate(it, req)))


if __name__ == "__main__":
    main()
