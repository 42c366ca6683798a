//! Pruning, applied in the same streaming pass as conversion and quantization.
//!
//! - [`unstructured`]: single weights (magnitude, Wanda, N:M), per output row.
//! - [`sparsegpt`]: SparseGPT's mask choice; the weight update is `quant::gptq`'s column sweep.
//! - [`structured`]: whole blocks (depth), FFN channels and attention heads (width); unequal
//!   per-layer widths are written as llama.cpp's `deci` architecture.
//! - [`heal`]: after FFN channels or heads are removed, the projection that read them is refit
//!   on what is kept; after blocks are dropped, the last kept block before each gap is refit to
//!   add what the gap added (layer-wise distillation in closed form).
//!
//! Every request is checked against the model before anything is written. Uses `calib` (the
//! statistics that steer it), `gguf` metadata and `util`.

pub mod heal;
pub mod sparsegpt;
pub mod structured;
pub mod unstructured;

use anyhow::{bail, Result};
use std::path::PathBuf;
use unstructured::{SparsityMethod, NM};

/// `--drop-layers`: how many blocks to remove.
#[derive(Clone, Debug, PartialEq)]
pub enum DropLayers {
    Count(usize),
    Ratio(f64),
}

impl std::str::FromStr for DropLayers {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<DropLayers> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(DropLayers::Count(n));
        }
        match s.parse::<f64>() {
            Ok(r) => Ok(DropLayers::Ratio(r)),
            Err(_) => bail!("--drop-layers takes a count (4) or a ratio (0.25), got {s:?}"),
        }
    }
}

/// `--heads-mode`: which attention heads go when a model has grouped-query attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HeadsMode {
    PerGroup,
    KvGroups,
}
crate::impl_choice!(HeadsMode {
    PerGroup => "per-group": "The same number of query heads removed from every KV group (KV heads kept)",
    KvGroups => "kv-groups": "Whole KV groups (a KV head with its query heads) removed",
});

/// `--width-allocation`: how the kept widths are spread over the layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    #[default]
    Uniform,
    Global,
    Standardized,
}
crate::impl_choice!(Allocation {
    Uniform => "uniform": "The same width in every layer (keeps the llama / gpt2 architecture)",
    Global => "global": "Widths allocated across layers by score (unequal: written as `deci`)",
    Standardized => "standardized": "FLAP's adaptive structure: each layer's scores standardized (minus their mean, \
        over their standard deviation), then ranked across layers (unequal: written as `deci`)",
});

/// Everything the pruning flags ask for.
#[derive(Clone, Debug)]
pub struct PruneSpec {
    pub sparsity: Option<f64>,
    pub method: SparsityMethod,
    pub nm: Option<NM>,
    /// Also prune token_embd and output (magnitude).
    pub sparsity_all: bool,
    pub drop_layers: Option<DropLayers>,
    pub drop_layers_list: Option<Vec<usize>>,
    pub prune_ffn: Option<f64>,
    pub prune_heads: Option<f64>,
    pub heads_mode: HeadsMode,
    pub allocation: Allocation,
    pub align: usize,
    /// `--heal`: refit the down and attention output projections after structured pruning.
    pub heal: bool,
    /// Calibration file to reuse (or to create when missing).
    pub calib: Option<PathBuf>,
    /// Calibration text (None: the data folder's WikiText-2 validation split).
    pub calib_text: Option<PathBuf>,
    /// Calibration chunks ([`CALIB_CHUNKS`] unless asked; the CLI's `--heal` takes [`HEAL_CALIB_CHUNKS`]).
    pub calib_chunks: usize,
    /// Tokens per calibration chunk (None: 512, or the model's context if shorter).
    pub calib_ctx: Option<usize>,
    /// `--sequential K`: calibrate in K stages, each group of blocks on the output of the
    /// compressed groups before it (0 or 1: one-shot, every block on the uncompressed model).
    pub sequential: usize,
    /// The data folder, for the default calibration text.
    pub data: crate::util::data::DataDir,
}

/// Calibration chunks by default: enough for an importance matrix and Wanda's norms.
pub const CALIB_CHUNKS: usize = 16;

/// Calibration chunks by default with `--heal`: the refits solve from the inputs' full second
/// moments, and on the default model FFN 25% healed gains most of what more text gives by 256
/// chunks of 512 tokens (PPL ratio 1.474 at 64, 1.398 at 256, 1.390 at 448; bench-results/pruning.md).
pub const HEAL_CALIB_CHUNKS: usize = 256;

impl Default for PruneSpec {
    fn default() -> Self {
        PruneSpec {
            sparsity: None,
            method: SparsityMethod::Magnitude,
            nm: None,
            sparsity_all: false,
            drop_layers: None,
            drop_layers_list: None,
            prune_ffn: None,
            prune_heads: None,
            heads_mode: HeadsMode::PerGroup,
            allocation: Allocation::Uniform,
            align: 1,
            heal: false,
            calib: None,
            calib_text: None,
            calib_chunks: CALIB_CHUNKS,
            calib_ctx: None,
            sequential: 0,
            data: crate::util::data::DataDir::resolve(None),
        }
    }
}

fn check_ratio(name: &str, r: Option<f64>) -> Result<()> {
    if let Some(r) = r {
        // 0 is allowed and changes nothing (the output is byte-identical to no pruning).
        if !(0.0..1.0).contains(&r) || r.is_nan() {
            bail!("{name} {r} is impossible: it must be at least 0 and below 1");
        }
    }
    Ok(())
}

impl PruneSpec {
    /// Unstructured sparsity actually requested (N:M implies its own).
    pub fn effective_sparsity(&self) -> f64 {
        self.nm.map(|nm| nm.sparsity()).or(self.sparsity).unwrap_or(0.0)
    }

    pub fn wants_unstructured(&self) -> bool {
        self.effective_sparsity() > 0.0
    }

    pub fn wants_depth(&self) -> bool {
        match (&self.drop_layers, &self.drop_layers_list) {
            (_, Some(l)) => !l.is_empty(),
            (Some(DropLayers::Count(n)), _) => *n > 0,
            (Some(DropLayers::Ratio(r)), _) => *r > 0.0,
            _ => false,
        }
    }

    pub fn wants_width(&self) -> bool {
        self.prune_ffn.unwrap_or(0.0) > 0.0 || self.prune_heads.unwrap_or(0.0) > 0.0
    }

    pub fn wants_structured(&self) -> bool {
        self.wants_depth() || self.wants_width()
    }

    /// The calibration text: `--calib-text`, else the data folder's WikiText-2 validation split.
    pub fn calib_text_path(&self) -> Result<PathBuf> {
        match &self.calib_text {
            Some(p) => Ok(p.clone()),
            None => self.data.file(crate::util::data::CALIB_TEXT),
        }
    }

    /// Does the request need every layer's input second moments (H), not only the imatrix?
    pub fn needs_moments(&self) -> bool {
        (self.wants_unstructured() && self.method == SparsityMethod::Sparsegpt) || self.heal
    }

    pub fn is_noop(&self) -> bool {
        !self.wants_unstructured() && !self.wants_structured()
    }

    /// Does the request need calibration statistics?
    pub fn needs_calibration(&self) -> bool {
        (self.wants_unstructured() && self.method != SparsityMethod::Magnitude)
            || (self.wants_depth() && self.drop_layers_list.is_none())
            || self.wants_width()
    }

    /// Checks that need no model.
    pub fn validate(&self) -> Result<()> {
        check_ratio("--sparsity", self.sparsity)?;
        check_ratio("--prune-ffn", self.prune_ffn)?;
        check_ratio("--prune-heads", self.prune_heads)?;
        if let Some(DropLayers::Ratio(r)) = self.drop_layers {
            check_ratio("--drop-layers", Some(r))?;
        }
        if let (Some(nm), Some(s)) = (self.nm, self.sparsity) {
            if (nm.sparsity() - s).abs() > 1e-9 {
                bail!(
                    "--nm {}:{} means {:.0}% sparsity, but --sparsity asks for {:.0}%",
                    nm.keep,
                    nm.group,
                    100.0 * nm.sparsity(),
                    100.0 * s
                );
            }
        }
        if self.drop_layers.is_some() && self.drop_layers_list.is_some() {
            bail!("give --drop-layers or --drop-layers-list, not both");
        }
        if self.heal && !self.wants_structured() {
            bail!(
                "--heal refits projections after structured pruning: give --prune-ffn, --prune-heads, --drop-layers or --drop-layers-list"
            );
        }
        if self.align == 0 {
            bail!("--align must be at least 1");
        }
        if self.calib_chunks == 0 {
            bail!("--calib-chunks must be at least 1");
        }
        Ok(())
    }
}
