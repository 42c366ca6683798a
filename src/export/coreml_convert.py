"""Convert a LLaMA-family Hugging Face checkpoint to a Core ML package with coremltools.

Run by `microscale export --format coreml` in the export environment (scripts/export-env.sh).
The model is written here in plain PyTorch from the checkpoint's tensors (each block sized from
its own tensors, so pruned blocks of any width convert), traced for one fixed sequence of --seq
tokens (input `input_ids`, int32; output `logits`, float), converted by coremltools to an ML
Program (float16 compute, iOS 17; 18 with int4 weights), its linear weights quantized as --weights says
(coremltools.optimize), then validated: the PyTorch model scores the windows given on stdin (which
microscale compares with llama.cpp), and the saved package reloaded (without running it: Core ML
runs only on Apple hardware), its inputs, outputs and weight types read back. Prints one JSON line.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch._dynamo  # noqa: F401  (before coremltools: triton imported after tensorflow segfaults)
import coremltools as ct
from safetensors.torch import load_file


class Block(torch.nn.Module):
    def __init__(self, t: dict, i: int, hf: dict):
        super().__init__()
        p = f"model.layers.{i}."
        self.wq, self.wk, self.wv, self.wo = (t[p + f"self_attn.{n}_proj.weight"] for n in "qkvo")
        self.wg, self.wu, self.wd = (t[p + f"mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        self.n1, self.n2 = t[p + "input_layernorm.weight"], t[p + "post_attention_layernorm.weight"]
        self.head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        self.n_head = self.wq.shape[0] // self.head_dim
        self.n_kv = self.wk.shape[0] // self.head_dim
        self.eps = hf.get("rms_norm_eps", 1e-6)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin, half: int):
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


class Llama(torch.nn.Module):
    def __init__(self, ckpt: str, seq: int):
        super().__init__()
        with open(os.path.join(ckpt, "config.json")) as f:
            hf = json.load(f)
        if hf.get("model_type") != "llama":
            sys.exit(f"coreml export: model_type {hf.get('model_type')!r}: the LLaMA family only")
        t = {k: v.float() for k, v in load_file(os.path.join(ckpt, "model.safetensors")).items()}
        self.emb = t["model.embed_tokens.weight"]
        self.head = t.get("lm_head.weight", self.emb)
        self.norm = t["model.norm.weight"]
        self.blocks = [Block(t, i, hf) for i in range(hf["num_hidden_layers"])]
        self.eps = hf.get("rms_norm_eps", 1e-6)
        d = self.blocks[0].head_dim
        inv = 1.0 / (hf.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2).float() / d))
        ang = torch.outer(torch.arange(seq).float(), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.cos, self.sin = ang.cos()[None, None], ang.sin()[None, None]
        self.mask = torch.full((seq, seq), float("-inf")).triu(1)[None, None]
        self.seq = seq

    def forward(self, ids):
        x = torch.nn.functional.embedding(ids, self.emb)
        n = self.seq
        for b in self.blocks:
            h = rms(x, b.n1, b.eps)
            q = (h @ b.wq.T).view(1, n, b.n_head, b.head_dim).transpose(1, 2)
            k = (h @ b.wk.T).view(1, n, b.n_kv, b.head_dim).transpose(1, 2)
            v = (h @ b.wv.T).view(1, n, b.n_kv, b.head_dim).transpose(1, 2)
            half = b.head_dim // 2
            q, k = rope(q, self.cos, self.sin, half), rope(k, self.cos, self.sin, half)
            # Grouped-query attention: each K/V head serves n_head / n_kv query heads in turn.
            rep = b.n_head // b.n_kv
            k = k[:, :, None].expand(1, b.n_kv, rep, n, b.head_dim).reshape(1, b.n_head, n, b.head_dim)
            v = v[:, :, None].expand(1, b.n_kv, rep, n, b.head_dim).reshape(1, b.n_head, n, b.head_dim)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(b.head_dim) + self.mask, dim=-1)
            x = x + (att @ v).transpose(1, 2).reshape(1, n, b.n_head * b.head_dim) @ b.wo.T
            h = rms(x, b.n2, b.eps)
            x = x + (torch.nn.functional.silu(h @ b.wg.T) * (h @ b.wu.T)) @ b.wd.T
        return rms(x, self.norm, self.eps) @ self.head.T


def compress(ml, weights: str):
    """The weights of the matrix products and of the embedding's lookup, nothing else: the RoPE
    tables (consumed by `mul`) stay float16, as a quantizer that took every large constant would
    not leave them."""
    opt = ct.optimize.coreml
    if weights == "fp16":
        return ml
    if weights == "int8":
        op = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    elif weights == "int4":
        op = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32)
    else:
        sys.exit(f"coreml export: weights {weights!r}")
    by_type = {t: op for t in ("linear", "matmul", "gather")}
    return opt.linear_quantize_weights(ml, config=opt.OptimizationConfig(op_type_configs=by_type))


def validate(path: str, seq: int, vocab: int) -> dict:
    m = ct.models.MLModel(path, skip_model_load=True)
    spec = m.get_spec()
    ins = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
    outs = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
    if ins != {"input_ids": [1, seq]}:
        sys.exit(f"coreml export: the package's inputs are {ins}")
    if list(outs) != ["logits"] or outs["logits"] not in ([1, seq, vocab], []):
        sys.exit(f"coreml export: the package's outputs are {outs}")
    ops = {}
    for f in spec.mlProgram.functions.values():
        for blk in f.block_specializations.values():
            for op in blk.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    weight_ops = {k: v for k, v in ops.items() if k.startswith("constexpr_") or k == "const"}
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return {"inputs": ins, "outputs": outs, "weight_ops": weight_ops, "package_bytes": size,
            "spec_version": spec.specificationVersion}


def source_nll(model: Llama, window: list, first: int) -> list:
    """The negative log-likelihood of tokens first+1.. of one window under the PyTorch model that
    is converted (float32): checked against llama.cpp on the same window by microscale."""
    with torch.no_grad():
        logits = model(torch.tensor([window], dtype=torch.int32))[0].double()
    lp = torch.log_softmax(logits[first:-1], dim=-1)
    nxt = torch.tensor(window[first + 1 :])
    return (-lp[torch.arange(len(nxt)), nxt]).tolist()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--seq", type=int, required=True)
    a = p.parse_args()
    started = time.time()
    model = Llama(a.checkpoint, a.seq).eval()
    request = json.loads(sys.stdin.read() or "{}")
    check = [source_nll(model, w, a.seq // 2) for w in request.get("windows", [])]
    example = torch.zeros((1, a.seq), dtype=torch.int32)
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    ml = ct.convert(
        traced,
        inputs=[ct.TensorType(name="input_ids", shape=(1, a.seq), dtype=np.int32)],
        outputs=[ct.TensorType(name="logits")],
        convert_to="mlprogram",
        # Per-block int4 weights need iOS 18; everything else runs from iOS 17.
        minimum_deployment_target=ct.target.iOS18 if a.weights == "int4" else ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
    )
    ml = compress(ml, a.weights)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    ml.save(a.out)
    report = validate(a.out, a.seq, model.emb.shape[0])
    report.update({"file": a.out, "seconds": time.time() - started, "weights": a.weights, "source_nll": check})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
