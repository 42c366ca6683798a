//! Sweep grids: TOML files listing the variants to build and how to measure them.
//!
//! ```toml
//! [eval]                      # how every variant is evaluated
//! ppl_chunks = 20             # perplexity windows of 512 tokens (WikiText-2 test)
//! kld_chunks = 10             # KL-divergence windows against the baseline
//! tasks = ["sst2", "arc-easy", "arc-challenge"]
//! limit = 200                 # items per task (a seeded sample); omit for all
//! [bench]
//! profiles = ["pi4-4gb", "host"]
//! reps = 2
//! pp = 128
//! tg = 32
//! [calib]
//! chunks = 16
//! imatrix = true              # quantize with the calibration's importance matrix (default)
//!
//! [[variant]]                 # one variant
//! name = "q8_0"
//! quant = "q8_0"
//!
//! [[variant]]                 # a size budget: types chosen per tensor to fit 90 MiB
//! quant = "q4_k_m"
//! target_size = "90MiB"       # or target_bpw = 4.5
//!
//! [[variant]]                 # error-compensated: GPTQ rounding, SparseGPT, healing
//! quant = "q4_k_m"
//! quant_method = "gptq"       # rtn (default) | gptq
//! sequential = 4              # calibrate in 4 stages on the compressed blocks (wanda, sparsegpt, gptq, heal)
//!
//! [[matrix]]                  # every method × ratio × quant
//! methods = ["magnitude", "wanda", "sparsegpt", "layers", "layers-heal", "ffn", "ffn-heal", "heads", "heads-heal"]
//! ratios = [0.1, 0.5, 0.9]
//! quants = ["q8_0", "q4_k_m"]
//! quant_method = "rtn"
//! allocation = "uniform"      # ffn/heads widths: uniform | global | standardized (FLAP; a `deci` file);
//!                             # other than uniform only in a matrix of ffn* and heads* methods
//!
//! [stock]                     # llama.cpp's own quants of the baseline, as their own rows
//! quants = ["q8_0", "q4_k_m", "q4_k_s"]   # with the same importance matrix as ours
//! plain = ["q4_k_m"]          # without one (`stock-q4_k_m-noimatrix`), a baseline of its own
//!
//! [profiles.my-board]         # a device of your own, as in the shipped profiles.toml
//! threads = 4
//! memory = "1GiB"
//! note = "what it is"
//! ```
//! The baseline (the uncompressed model at F32) is always the first variant.

use crate::bench::profiles::Profile;
use crate::convert::budget::Budget;
use crate::prune::unstructured::SparsityMethod;
use crate::prune::{Allocation, DropLayers, PruneSpec};
use crate::quant::gptq::QuantMethod;
use crate::quant::mix::Scheme;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    #[serde(default = "default_ppl_chunks")]
    pub ppl_chunks: usize,
    #[serde(default = "default_kld_chunks")]
    pub kld_chunks: usize,
    #[serde(default)]
    pub tasks: Vec<String>,
    pub limit: Option<usize>,
    #[serde(default)]
    pub shots: usize,
}

fn default_ppl_chunks() -> usize {
    20
}
fn default_kld_chunks() -> usize {
    10
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default = "default_reps")]
    pub reps: usize,
    #[serde(default = "default_pp")]
    pub pp: usize,
    #[serde(default = "default_tg")]
    pub tg: usize,
}

fn default_reps() -> usize {
    2
}
fn default_pp() -> usize {
    128
}
fn default_tg() -> usize {
    32
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibConfig {
    #[serde(default = "default_calib_chunks")]
    pub chunks: usize,
    #[serde(default = "yes")]
    pub imatrix: bool,
}

fn yes() -> bool {
    true
}

fn default_calib_chunks() -> usize {
    crate::prune::CALIB_CHUNKS
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: Option<String>,
    quant: String,
    #[serde(default = "none")]
    method: String,
    #[serde(default)]
    ratio: f64,
    imatrix: Option<bool>,
    target_size: Option<String>,
    target_bpw: Option<f64>,
    #[serde(default)]
    quant_method: QuantMethodName,
    #[serde(default)]
    sequential: usize,
    #[serde(default)]
    allocation: Allocation,
}

/// `quant_method` in a grid: how the levels are chosen.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum QuantMethodName {
    #[default]
    Rtn,
    Gptq,
}

impl From<QuantMethodName> for QuantMethod {
    fn from(m: QuantMethodName) -> QuantMethod {
        match m {
            QuantMethodName::Rtn => QuantMethod::Rtn,
            QuantMethodName::Gptq => QuantMethod::Gptq,
        }
    }
}

fn none() -> String {
    "none".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    methods: Vec<String>,
    ratios: Vec<f64>,
    quants: Vec<String>,
    imatrix: Option<bool>,
    #[serde(default)]
    quant_method: QuantMethodName,
    #[serde(default)]
    sequential: usize,
    #[serde(default)]
    allocation: Allocation,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStock {
    #[serde(default)]
    quants: Vec<String>,
    #[serde(default)]
    plain: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    eval: EvalConfig,
    bench: BenchConfig,
    calib: Option<CalibConfig>,
    #[serde(default)]
    variant: Vec<RawVariant>,
    #[serde(default)]
    matrix: Vec<RawMatrix>,
    stock: Option<RawStock>,
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, crate::bench::profiles::RawProfile>,
}

pub use crate::record::results::Kind;

/// One model variant of the grid.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub kind: Kind,
    pub quant: Scheme,
    /// none | magnitude | wanda | sparsegpt | layers | layers-heal | ffn | ffn-heal | heads | heads-heal
    pub method: String,
    pub ratio: f64,
    /// Round to nearest, or GPTQ's error-compensated rounding.
    pub quant_method: QuantMethod,
    /// Quantized with the sweep's importance matrix (float variants: false).
    pub imatrix: bool,
    /// A size budget for the types (`target_size`, `target_bpw`).
    pub budget: Option<Budget>,
    /// Calibration stages (`--sequential`; 0 or 1: one-shot).
    pub sequential: usize,
    /// How FFN and head widths are spread over the layers (`--width-allocation`).
    pub allocation: Allocation,
}

impl Variant {
    /// A file made as it is, not by a recipe of ours: the baseline, the file as shipped, a stock
    /// quant (no pruning, rounding to nearest, no budget).
    pub fn made_elsewhere(name: &str, kind: Kind, quant: Scheme, imatrix: bool) -> Variant {
        Variant {
            name: name.into(),
            kind,
            quant,
            method: "none".into(),
            ratio: 0.0,
            quant_method: QuantMethod::Rtn,
            imatrix,
            budget: None,
            sequential: 0,
            allocation: Allocation::Uniform,
        }
    }

    /// A readable description of how it is made.
    pub fn recipe(&self) -> String {
        let imatrix = if self.imatrix { " + imatrix" } else { "" };
        let gptq = if self.quant_method == QuantMethod::Gptq { " (GPTQ)" } else { "" };
        let mut budget = match self.budget {
            Some(Budget::Size(b)) => format!(" @ {}", crate::util::mem::format_size(b)),
            Some(Budget::Bpw(b)) => format!(" @ {b} bpw"),
            None => String::new(),
        };
        if self.sequential > 1 {
            budget.push_str(&format!(", sequential ×{}", self.sequential));
        }
        if self.allocation != Allocation::Uniform {
            budget.push_str(&format!(", {:?} widths", self.allocation).to_lowercase());
        }
        match (self.kind, self.method.as_str()) {
            (Kind::Baseline, _) => "f32 (uncompressed baseline)".into(),
            (Kind::Stock, _) => format!("llama-quantize {}{imatrix}", self.quant.name()),
            (Kind::Source, _) => format!("the file as given ({})", self.quant.name()),
            (_, "none") => format!("{}{gptq}{budget}{imatrix}", self.quant.name()),
            (_, m) => format!("{m} {:.0}% + {}{gptq}{budget}{imatrix}", 100.0 * self.ratio, self.quant.name()),
        }
    }

    /// The pruning request for this variant.
    pub fn prune_spec(&self, calib_chunks: usize) -> Result<PruneSpec> {
        let mut s = PruneSpec { calib_chunks, ..Default::default() };
        let r = self.ratio;
        match self.method.as_str() {
            "none" => {}
            "magnitude" => s.sparsity = Some(r),
            "wanda" => {
                s.sparsity = Some(r);
                s.method = SparsityMethod::Wanda;
            }
            "sparsegpt" => {
                s.sparsity = Some(r);
                s.method = SparsityMethod::Sparsegpt;
            }
            "layers" | "layers-heal" => s.drop_layers = Some(DropLayers::Ratio(r)),
            "ffn" | "ffn-heal" => s.prune_ffn = Some(r),
            "heads" | "heads-heal" => s.prune_heads = Some(r),
            other => bail!(
                "unknown method {other:?} (none, magnitude, wanda, sparsegpt, layers, layers-heal, ffn, ffn-heal, heads, heads-heal)"
            ),
        }
        s.heal = self.method.ends_with("-heal");
        s.sequential = self.sequential;
        s.allocation = self.allocation;
        Ok(s)
    }

    /// Does building it need the calibration's second moments (not only the imatrix)?
    pub fn needs_moments(&self) -> bool {
        (self.quant_method == QuantMethod::Gptq && !self.quant.is_float())
            || self.prune_spec(1).is_ok_and(|s| s.needs_moments())
    }
}

#[derive(Clone, Debug)]
pub struct Grid {
    pub eval: EvalConfig,
    pub bench: BenchConfig,
    pub calib_chunks: usize,
    pub variants: Vec<Variant>,
    /// Device profiles the grid defines itself (`[profiles.NAME]`), beside the shipped ones.
    pub profiles: std::collections::BTreeMap<String, Profile>,
}

/// The row name of the uncompressed baseline (its GGUF: `OUT/variants/baseline-f32.gguf`).
pub const BASELINE: &str = "baseline-f32";

/// The row name of the file the model came as.
pub const AS_SHIPPED: &str = "as-shipped";

impl Grid {
    /// Measure `file`, the GGUF the model came as, as a row of its own (`as-shipped`, kind
    /// `source`), right after the baseline: every size is then also stated against what the user
    /// already has. Its `quant` is the file's `general.file_type`.
    pub fn add_as_shipped(&mut self, file: &Path) -> Result<()> {
        if self.variants.iter().any(|v| v.name == AS_SHIPPED) {
            bail!("the grid already has a variant named {AS_SHIPPED:?}, the row of the file as shipped");
        }
        let gguf = crate::gguf::GgufFile::open(file)?;
        let ftype = gguf.get("general.file_type").and_then(|v| v.as_u64());
        let quant = ftype.and_then(|t| Scheme::ALL.iter().copied().find(|s| s.file_type() as u64 == t));
        let quant = quant.unwrap_or(Scheme::F32);
        let v = Variant::made_elsewhere(AS_SHIPPED, Kind::Source, quant, false);
        self.variants.insert(1.min(self.variants.len()), v);
        Ok(())
    }

    /// A profile by name: the grid's own first, then the shipped ones.
    pub fn profile(&self, name: &str) -> Result<Profile> {
        match self.profiles.get(name) {
            Some(p) => Ok(p.clone()),
            None => crate::bench::profiles::profile(name),
        }
    }

    /// The JSONL files its `mc:` tasks name.
    pub fn task_files(&self) -> Vec<std::path::PathBuf> {
        let tasks = self.eval.tasks.iter().filter_map(|t| t.parse::<crate::eval::data::Task>().ok());
        tasks.filter_map(|t| if let crate::eval::data::Task::Mc(p) = t { Some(p) } else { None }).collect()
    }

    /// A variant by name, or by its 0-based index in the grid.
    pub fn variant(&self, name_or_index: &str) -> Result<&Variant> {
        if let Some(v) = self.variants.iter().find(|v| v.name == name_or_index) {
            return Ok(v);
        }
        match name_or_index.parse::<usize>() {
            Ok(i) if i < self.variants.len() => Ok(&self.variants[i]),
            _ => bail!(
                "no variant {name_or_index:?} in the grid ({} variants: {}, …)",
                self.variants.len(),
                self.variants.iter().take(4).map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// How a microscale variant is compressed, before its name, type, imatrix and budget.
struct Recipe {
    method: String,
    ratio: f64,
    quant_method: QuantMethod,
    sequential: usize,
    allocation: Allocation,
}

impl Recipe {
    fn variant(self, name: String, quant: Scheme, imatrix: bool, budget: Option<Budget>) -> Variant {
        let Recipe { method, ratio, quant_method, sequential, allocation } = self;
        Variant {
            name,
            kind: Kind::Microscale,
            quant,
            method,
            ratio,
            quant_method,
            imatrix,
            budget,
            sequential,
            allocation,
        }
    }

    /// The default name: method, ratio, type, then what differs from one-shot, uniform RTN.
    fn name(&self, quant: Scheme) -> String {
        let seq = if self.sequential > 1 { format!("-seq{}", self.sequential) } else { String::new() };
        let widths = match self.allocation {
            Allocation::Uniform => "",
            Allocation::Global => "-global",
            Allocation::Standardized => "-std",
        };
        let suffix = format!("{}{seq}{widths}", if self.quant_method == QuantMethod::Gptq { "-gptq" } else { "" });
        if self.method == "none" {
            format!("{}{suffix}", quant.name())
        } else {
            format!("{}{:.0}-{}{suffix}", self.method, 100.0 * self.ratio, quant.name())
        }
    }
}

pub fn load_grid(path: &Path) -> Result<Grid> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_grid(&text).with_context(|| format!("{}", path.display()))
}

/// The grid a study runs: the file's, with the `as-shipped` row when the study measures the file
/// the model came as. Every process of a sweep (and `sweep --status`) builds it the same way, so
/// that they agree on its rows.
pub fn load_study_grid(path: &Path, as_shipped: Option<&Path>) -> Result<Grid> {
    let mut grid = load_grid(path)?;
    if let Some(file) = as_shipped {
        grid.add_as_shipped(file)?;
    }
    Ok(grid)
}

/// The most variants a grid may hold: far more than anyone measures (each takes minutes), few
/// enough that a mistyped matrix is refused at once rather than expanded.
pub const MAX_VARIANTS: usize = 10_000;

/// Settings that must be positive, and the size of the matrices' expansion, before it is made.
fn check_settings(raw: &RawGrid) -> Result<()> {
    let e = &raw.eval;
    if e.ppl_chunks == 0 {
        bail!("[eval] ppl_chunks = 0: every variant's perplexity needs at least 1 window");
    }
    if e.limit == Some(0) {
        bail!("[eval] limit = 0 leaves no item to evaluate (omit it for all)");
    }
    if raw.bench.reps == 0 && !raw.bench.profiles.is_empty() {
        bail!("[bench] reps = 0 measures nothing (at least 1)");
    }
    if !raw.bench.profiles.is_empty() && raw.bench.pp == 0 && raw.bench.tg == 0 {
        bail!("[bench] pp = 0 and tg = 0 measure nothing (give profiles = [] to skip benchmarks)");
    }
    if raw.calib.as_ref().is_some_and(|c| c.chunks == 0) {
        bail!("[calib] chunks = 0: calibration needs at least 1 chunk");
    }
    let mut total = raw.variant.len() + raw.stock.as_ref().map_or(0, |s| s.quants.len() + s.plain.len());
    for m in &raw.matrix {
        let n = m.methods.len().checked_mul(m.ratios.len()).and_then(|n| n.checked_mul(m.quants.len()));
        total = n.and_then(|n| n.checked_add(total)).unwrap_or(usize::MAX);
        if m.methods.is_empty() || m.ratios.is_empty() || m.quants.is_empty() {
            bail!("a [[matrix]] with no methods, ratios or quants expands to nothing");
        }
    }
    if total > MAX_VARIANTS {
        bail!("the grid expands to {total} variants, more than {MAX_VARIANTS}: split it");
    }
    Ok(())
}

/// A variant's name becomes a file name (`variants/NAME.gguf`, `rows/NAME.json`): one plain
/// component, no path, nothing hidden.
fn check_variant_name(name: &str) -> Result<()> {
    crate::util::names::check_plain_name(name).map_err(|e| anyhow::anyhow!("variant name {e}"))
}

pub fn parse_grid(text: &str) -> Result<Grid> {
    let raw: RawGrid = toml::from_str(text)?;
    let with_imatrix = raw.calib.as_ref().is_none_or(|c| c.imatrix);
    let mut variants = vec![Variant::made_elsewhere(BASELINE, Kind::Baseline, Scheme::F32, false)];
    check_settings(&raw)?;
    let mut names: std::collections::HashSet<String> = [BASELINE.to_string()].into();
    let mut push = |v: Variant| -> Result<()> {
        check_variant_name(&v.name)?;
        if !names.insert(v.name.clone()) {
            bail!("variant {:?} appears twice", v.name);
        }
        // Unknown methods and impossible ratios are refused now, before any work.
        let spec =
            v.prune_spec(1).and_then(|s| s.validate().map(|()| s)).with_context(|| format!("variant {:?}", v.name))?;
        if v.method == "none" && v.ratio != 0.0 {
            bail!("variant {:?}: ratio {} without a pruning method", v.name, v.ratio);
        }
        if v.allocation != Allocation::Uniform && spec.prune_ffn.is_none() && spec.prune_heads.is_none() {
            bail!("variant {:?}: allocation spreads FFN and head widths, not {} pruning", v.name, v.method);
        }
        if v.quant_method == QuantMethod::Gptq && v.quant.is_float() {
            bail!("variant {:?}: GPTQ rounds onto a quantized type's grid, not {}", v.name, v.quant.name());
        }
        variants.push(v);
        Ok(())
    };
    for v in raw.variant {
        let quant = Scheme::parse(&v.quant)?;
        let budget = match (&v.target_size, v.target_bpw) {
            (Some(_), Some(_)) => bail!("variant {:?}: target_size and target_bpw are exclusive", v.quant),
            (Some(s), None) => Some(Budget::Size(crate::util::mem::parse_size(s)?)),
            (None, Some(b)) if b > 0.0 && b <= 32.0 => Some(Budget::Bpw(b)),
            (None, Some(b)) => bail!("target_bpw {b} is not a bit rate between 0 and 32"),
            (None, None) => None,
        };
        if budget.is_some() && quant.is_float() {
            bail!("a size budget needs a quantized type, not {}", quant.name());
        }
        let recipe = Recipe {
            method: v.method,
            ratio: v.ratio,
            quant_method: v.quant_method.into(),
            sequential: v.sequential,
            allocation: v.allocation,
        };
        let default_name = recipe.name(quant);
        let mut name = v.name.unwrap_or_else(|| default_name.clone());
        if let (Some(s), true) = (&v.target_size, name == default_name) {
            name = format!("{name}-{}", s.to_ascii_lowercase().replace(char::is_whitespace, ""));
        } else if let (Some(b), true) = (v.target_bpw, name == default_name) {
            name = format!("{name}-{b}bpw");
        }
        let imatrix = v.imatrix.unwrap_or(with_imatrix) && !quant.is_float();
        push(recipe.variant(name, quant, imatrix, budget))?;
    }
    for m in raw.matrix {
        for method in &m.methods {
            for &ratio in &m.ratios {
                for q in &m.quants {
                    let quant = Scheme::parse(q)?;
                    let imatrix = m.imatrix.unwrap_or(with_imatrix) && !quant.is_float();
                    let recipe = Recipe {
                        method: method.clone(),
                        ratio,
                        quant_method: m.quant_method.into(),
                        sequential: m.sequential,
                        allocation: m.allocation,
                    };
                    let name = recipe.name(quant);
                    push(recipe.variant(name, quant, imatrix, None))?;
                }
            }
        }
    }
    if let Some(s) = raw.stock {
        let rows = s.quants.iter().map(|q| (q, with_imatrix)).chain(s.plain.iter().map(|q| (q, false)));
        for (q, imatrix) in rows {
            let quant = Scheme::parse(q)?;
            let imatrix = imatrix && !quant.is_float();
            let suffix = if !imatrix && with_imatrix && !quant.is_float() { "-noimatrix" } else { "" };
            push(Variant::made_elsewhere(&format!("stock-{}{suffix}", quant.name()), Kind::Stock, quant, imatrix))?;
        }
    }
    for t in &raw.eval.tasks {
        t.parse::<crate::eval::data::Task>()?;
    }
    let mut profiles = std::collections::BTreeMap::new();
    for (name, p) in raw.profiles {
        profiles.insert(name.clone(), p.into_profile(&name)?);
    }
    let grid = Grid {
        eval: raw.eval,
        bench: raw.bench,
        calib_chunks: raw.calib.map_or(default_calib_chunks(), |c| c.chunks),
        variants,
        profiles,
    };
    for p in &grid.bench.profiles {
        grid.profile(p)?;
    }
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[eval]\n[bench]\n";

    fn err(text: &str) -> String {
        format!("{:#}", parse_grid(text).unwrap_err())
    }

    #[test]
    fn variant_names_are_plain_file_names() {
        for bad in ["../../x", "/abs", "", ".hidden", "a/b", "a\\\\b", "-x", "a b"] {
            let e = err(&format!("{BASE}[[variant]]\nname = \"{bad}\"\nquant = \"q8_0\"\n"));
            assert!(e.contains("not a plain name"), "{bad:?}: {e}");
        }
        let g = parse_grid(&format!("{BASE}[[variant]]\nname = \"q8_0-mine+1.5\"\nquant = \"q8_0\"\n")).unwrap();
        assert_eq!(g.variants[1].name, "q8_0-mine+1.5");
    }

    #[test]
    fn a_huge_expansion_is_refused_before_it_is_made() {
        let ratios: Vec<String> = (1..=1000).map(|i| format!("{}", i as f64 / 1001.0)).collect();
        let quants = vec!["\"q8_0\""; 1000].join(", ");
        let text = format!(
            "{BASE}[[matrix]]\nmethods = [\"magnitude\"]\nratios = [{}]\nquants = [{quants}]\n",
            ratios.join(", ")
        );
        let e = err(&text);
        assert!(e.contains("1000000 variants") && e.contains(&MAX_VARIANTS.to_string()), "{e}");
        // Duplicates are found in one pass, whatever the grid's size.
        let dup = format!(
            "{BASE}[[matrix]]\nmethods = [\"magnitude\", \"magnitude\"]\nratios = [0.5]\nquants = [\"q8_0\"]\n"
        );
        assert!(err(&dup).contains("appears twice"));
    }

    #[test]
    fn settings_and_ratios_are_checked_when_read() {
        let cases = [
            ("[eval]\nppl_chunks = 0\n[bench]\n", "ppl_chunks"),
            ("[eval]\nlimit = 0\n[bench]\n", "limit"),
            ("[eval]\n[bench]\nprofiles = [\"host\"]\nreps = 0\n", "reps"),
            ("[eval]\n[bench]\n[calib]\nchunks = 0\n", "chunks"),
            ("[eval]\n[bench]\n[[matrix]]\nmethods = [\"wanda\"]\nratios = [nan]\nquants = [\"q8_0\"]\n", "NaN"),
            ("[eval]\n[bench]\n[[matrix]]\nmethods = [\"ffn\"]\nratios = [1.0]\nquants = [\"q8_0\"]\n", "impossible"),
            ("[eval]\n[bench]\n[[variant]]\nquant = \"q8_0\"\nratio = 0.5\n", "without a pruning method"),
        ];
        for (text, needle) in cases {
            let e = err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
