"""Convert a LLaMA-family Hugging Face checkpoint to LiteRT (.tflite) with litert-torch.

Run by `microscale export --format litert` in the export environment (scripts/export-env.sh).
The model is built with litert-torch's generative API (the layers its SmolLM, LLaMA and
TinyLlama builders use), its configuration read from config.json; the converter adds a
prefill signature per --prefill length (its logits kept, so perplexity can be measured) and a
decode signature, over an external KV cache of --ctx tokens, and quantizes the weights as
--quantize names (litert-torch's recipes). Prints one JSON line: what was written.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import litert_torch.generative.layers.model_config as cfg
from litert_torch.generative.utilities import converter, export_config, model_builder


def model_config(hf: dict, max_seq_len: int) -> cfg.ModelConfig:
    if hf.get("model_type") not in ("llama", "mistral", "qwen2"):
        sys.exit(f"litert export: model_type {hf.get('model_type')!r} is not one litert-torch's LLaMA builder expresses")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    attn = cfg.AttentionConfig(
        num_heads=heads,
        head_dim=head_dim,
        num_query_groups=hf.get("num_key_value_heads", heads),
        rotary_base=int(hf.get("rope_theta", 10000)),
        rotary_percentage=1.0,
        qkv_use_bias=bool(hf.get("attention_bias", False)),
    )
    ff = cfg.FeedForwardConfig(
        type=cfg.FeedForwardType.GATED,
        activation=cfg.ActivationConfig(cfg.ActivationType.SILU),
        intermediate_size=hf["intermediate_size"],
    )
    norm = cfg.NormalizationConfig(type=cfg.NormalizationType.RMS_NORM, epsilon=hf.get("rms_norm_eps", 1e-6))
    block = cfg.TransformerBlockConfig(
        attn_config=attn, ff_config=ff, pre_attention_norm_config=norm, post_attention_norm_config=norm
    )
    return cfg.ModelConfig(
        vocab_size=hf["vocab_size"],
        num_layers=hf["num_hidden_layers"],
        max_seq_len=max_seq_len,
        embedding_dim=hf["hidden_size"],
        block_configs=block,
        final_norm_config=norm,
        lm_head_share_weight_with_embedding=bool(hf.get("tie_word_embeddings", False)),
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quantize", required=True)
    p.add_argument("--prefill", required=True, help="comma-separated lengths")
    p.add_argument("--ctx", type=int, required=True)
    a = p.parse_args()
    with open(os.path.join(a.checkpoint, "config.json")) as f:
        hf = json.load(f)
    started = time.time()
    prefill = [int(n) for n in a.prefill.split(",")]
    config = model_config(hf, max([a.ctx] + prefill))
    model = model_builder.build_decoder_only_model(
        checkpoint_path=a.checkpoint,
        config=config,
        tensor_names=model_builder.TENSOR_NAMES,
        model_class=model_builder.DecoderOnlyModel,
        mask_cache_size=a.ctx,
    )
    work = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(a.out)) or ".")
    try:
        written = converter.convert_to_tflite(
            model,
            output_path=work,
            output_name_prefix="model",
            prefill_seq_len=prefill,
            kv_cache_max_len=a.ctx,
            quantize=a.quantize,
            export_config=export_config.ExportConfig(output_logits_on_prefill=True),
        )
        shutil.move(written, a.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    print(json.dumps({"file": a.out, "seconds": time.time() - started, "quantize": a.quantize, "peak_rss_kib": peak}))


if __name__ == "__main__":
    main()
