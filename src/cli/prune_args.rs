//! The pruning flags, shared by `convert` and `prune-plan`.

use super::at_least;
use microscale::prune::unstructured::{SparsityMethod, NM};
use microscale::prune::{Allocation, DropLayers, HeadsMode, PruneSpec, CALIB_CHUNKS, HEAL_CALIB_CHUNKS};
use microscale::util::data::DataDir;
use microscale::util::paths::IoPaths;
use std::path::PathBuf;

/// Pruning flags (shared by `convert` and `prune-plan`).
#[derive(clap::Args, Clone, Debug)]
pub struct PruneArgs {
    /// Unstructured: fraction of each linear weight row to zero (0 < R < 1; 0 = no-op).
    #[arg(long, value_name = "R", help_heading = "Pruning")]
    sparsity: Option<f64>,
    /// magnitude: |W|; wanda: |W|·‖X‖; sparsegpt: OBS saliency w²/[H⁻¹]², and the kept weights
    /// updated to compensate (Frantar & Alistarh 2023). Wanda and SparseGPT calibrate.
    #[arg(long, value_parser = super::choice::<SparsityMethod>(), default_value = "magnitude", help_heading = "Pruning")]
    sparsity_method: SparsityMethod,
    /// Semi-structured N:M: keep N of every M consecutive weights (e.g. 2:4).
    #[arg(long, value_name = "N:M", help_heading = "Pruning")]
    nm: Option<NM>,
    /// Also sparsify token_embd and output (magnitude).
    #[arg(long, help_heading = "Pruning")]
    sparsity_all: bool,
    /// Depth: remove this many blocks (or this fraction, e.g. 0.25), lowest Block Influence first.
    #[arg(long, value_name = "N|R", help_heading = "Pruning")]
    drop_layers: Option<DropLayers>,
    /// Depth: remove exactly these blocks (comma-separated indices).
    #[arg(long, value_name = "I,J,...", value_delimiter = ',', help_heading = "Pruning")]
    drop_layers_list: Option<Vec<usize>>,
    /// Width: fraction of FFN channels to remove (activation-aware).
    #[arg(long, value_name = "R", help_heading = "Pruning")]
    prune_ffn: Option<f64>,
    /// Width: fraction of attention heads to remove (LLaMA only; llama.cpp's GPT-2 graph cannot
    /// run with fewer heads, so GPT-2 refuses this).
    #[arg(long, value_name = "R", help_heading = "Pruning")]
    prune_heads: Option<f64>,
    /// With GQA: remove query heads evenly from every KV group, or whole KV groups.
    #[arg(long, value_parser = super::choice::<HeadsMode>(), default_value = "per-group", help_heading = "Pruning")]
    heads_mode: HeadsMode,
    /// uniform: same width in every layer (keeps llama/gpt2); global: by score across layers;
    /// standardized: by each layer's standardized scores across layers (FLAP's adaptive
    /// structure). Unequal widths are written as llama.cpp's `deci` architecture.
    #[arg(long, value_parser = super::choice::<Allocation>(), default_value = "uniform", help_heading = "Pruning")]
    width_allocation: Allocation,
    /// Round kept widths to multiples of N (256 lets K-quants apply).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = at_least::<1>(), help_heading = "Pruning")]
    align: usize,
    /// After --prune-ffn / --prune-heads, refit each block's down / attention output projection
    /// on the channels and heads it keeps, so the block's output matches the unpruned model's on
    /// the calibration text; after --drop-layers, refit the down projection of the last kept
    /// block before each gap so the residual stream after it matches the unpruned model's after
    /// the gap (ridge least squares, with a bias for the mean where llama.cpp's graph reads one).
    /// Calibrates the layers' input second moments (and, for gaps, one more pass).
    #[arg(long, help_heading = "Pruning")]
    heal: bool,
    /// Calibration file (llama.cpp imatrix GGUF + block influences): reused when it exists,
    /// written when it does not. Its importance matrix also steers the quantizers (unless
    /// --imatrix is given), with or without pruning.
    #[arg(long, value_name = "FILE", help_heading = "Pruning")]
    calib: Option<PathBuf>,
    /// Calibration text [default: the data folder's wikitext-2/wiki.valid.tokens].
    #[arg(long, value_name = "FILE", help_heading = "Pruning")]
    calib_text: Option<PathBuf>,
    /// The data folder (default: $MICROSCALE_DATA, else the one shipped with microscale).
    #[arg(long, value_name = "DIR", help_heading = "Pruning")]
    data_dir: Option<PathBuf>,
    /// Calibration chunks of 512 tokens [default: 16; 256 with --heal]. An importance matrix
    /// settles with few; the second moments the refits solve from want many more: on the default
    /// model, FFN 25% healed (standardized widths) has a PPL ratio of 1.474 with 64 chunks, 1.398
    /// with 256 and 1.390 with 448 (SparseGPT and GPTQ calibrate on 128 × 2048 tokens, 512
    /// chunks). Calibration time grows with the count; memory does not.
    #[arg(long, value_name = "N", value_parser = at_least::<1>(), help_heading = "Pruning")]
    calib_chunks: Option<usize>,
    /// Calibrate sequentially in K stages, as SparseGPT and GPTQ do: the blocks are split into K
    /// groups, and each group's statistics are measured on the output of the groups before it,
    /// already compressed, so later blocks compensate for what earlier ones lost (K = the number
    /// of blocks is the papers' block-by-block order). For wanda, sparsegpt and --quant-method
    /// gptq; costs K − 1 more conversions and calibration passes. --calib keeps the one-shot stage.
    /// With --heal: each stage's healed projections are refit on the partly pruned model's own
    /// inputs, and each stage's first block is refit so the residual stream after it matches the
    /// unpruned model's (taking the error the pruned blocks before it left); 3(K − 1) passes.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = at_least::<1>(), help_heading = "Pruning")]
    sequential: usize,
}

impl PruneArgs {
    /// The calibration file (read when it exists, written when not) and the text it is made from.
    pub fn io(&self, io: IoPaths) -> IoPaths {
        io.reused_or_written("--calib", self.calib.as_ref())
            .input_opt("--calib-text", self.calib_text.as_ref())
            .input_opt("--data-dir", self.data_dir.as_ref())
    }

    pub fn spec(&self) -> PruneSpec {
        PruneSpec {
            sparsity: self.sparsity,
            method: self.sparsity_method,
            nm: self.nm,
            sparsity_all: self.sparsity_all,
            drop_layers: self.drop_layers.clone(),
            drop_layers_list: self.drop_layers_list.clone(),
            prune_ffn: self.prune_ffn,
            prune_heads: self.prune_heads,
            heads_mode: self.heads_mode,
            allocation: self.width_allocation,
            align: self.align,
            heal: self.heal,
            calib: self.calib.clone(),
            calib_text: self.calib_text.clone(),
            calib_chunks: self.calib_chunks.unwrap_or(if self.heal { HEAL_CALIB_CHUNKS } else { CALIB_CHUNKS }),
            calib_ctx: None,
            sequential: self.sequential,
            data: DataDir::resolve(self.data_dir.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        prune: PruneArgs,
    }

    fn chunks(args: &[&str]) -> usize {
        let all: Vec<&str> = std::iter::once("convert").chain(args.iter().copied()).collect();
        Wrapper::try_parse_from(all).unwrap().prune.spec().calib_chunks
    }

    #[test]
    fn healing_calibrates_on_more_chunks_unless_told() {
        assert_eq!(chunks(&[]), 16);
        assert_eq!(chunks(&["--sparsity", "0.5", "--sparsity-method", "wanda"]), 16);
        assert_eq!(chunks(&["--prune-ffn", "0.25", "--heal"]), 256);
        assert_eq!(chunks(&["--prune-ffn", "0.25", "--heal", "--calib-chunks", "32"]), 32);
        assert_eq!(chunks(&["--calib-chunks", "8"]), 8);
    }
}
