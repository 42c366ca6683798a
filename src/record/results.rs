//! `results.csv` (one row per model variant, written by `microscale sweep`) read into typed rows.
//!
//! Empty fields are "not measured" (`None`). Device profiles are discovered from the header (every
//! column named `P:tg_tps` makes `P` a profile) and accuracy metrics likewise (every column ending
//! in `_acc` or `_acc_norm`). Malformed input is an error naming the file and the line.

pub use super::status::Status;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The uncompressed model (exactly one row, or none).
    Baseline,
    /// One of microscale's variants.
    Microscale,
    /// A llama.cpp quantization made by `llama-quantize` from the same input.
    Stock,
    /// The file the user started from, as given ("as shipped"): the GGUF the model was imported
    /// from, or the GGUF swept. Its savings are what a user gains over what they already have.
    Source,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Microscale => "microscale",
            Kind::Stock => "stock",
            Kind::Source => "source",
        }
    }
}

/// A measured value with its standard error (when the metric has one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measure {
    pub value: f64,
    pub stderr: Option<f64>,
}

/// One device profile's benchmark of one variant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bench {
    /// How the run ended (`fits`: ran within the profile's caps; `oom`: did not fit; `crash`,
    /// `error`, `timeout`: failed otherwise); `None`: not benchmarked.
    pub status: Option<Status>,
    pub peak_rss_mib: Option<f64>,
    pub pp_tps: Option<f64>,
    pub pp_tps_sd: Option<f64>,
    pub tg_tps: Option<f64>,
    pub tg_tps_sd: Option<f64>,
    pub load_s: Option<f64>,
    pub ttft_s: Option<f64>,
    pub mem_cap_mib: Option<f64>,
    /// llama.cpp repacked the weights into its interleaved CPU layouts at load (None: not recorded).
    pub repacked: Option<bool>,
}

impl Bench {
    /// Ran within the profile's caps.
    pub fn fits(&self) -> bool {
        self.status == Some(Status::Fits)
    }
}

/// One row of results.csv.
#[derive(Clone, Debug)]
pub struct Variant {
    /// 1-based line of the file where the row starts.
    pub line: usize,
    pub name: String,
    pub kind: Kind,
    pub recipe: String,
    pub method: String,
    pub prune_ratio: Option<f64>,
    pub quant: String,
    pub size_bytes: Option<u64>,
    pub n_params: Option<u64>,
    pub bpw: Option<f64>,
    pub ppl: Option<Measure>,
    pub kld: Option<Measure>,
    pub same_top: Option<f64>,
    /// Accuracy metrics (fractions in 0..1) by column name, e.g. `arc_easy_acc`.
    pub acc: BTreeMap<String, Measure>,
    /// Benchmarks by profile name.
    pub bench: BTreeMap<String, Bench>,
    /// `ok`, or how the variant's child failed (`error`, `crash`, `timeout`).
    pub status: String,
    /// Why the variant failed (non-empty `error` field).
    pub error: Option<String>,
    pub eval_chunks: Option<String>,
    pub eval_limit: Option<String>,
    /// Layers offloaded to a GPU (None in files written before the column existed).
    pub gpu_layers: Option<String>,
    pub microscale: Option<String>,
    pub llama_cpp: Option<String>,
    pub date: Option<String>,
}

impl Variant {
    pub fn failed(&self) -> bool {
        self.status != "ok" || self.error.is_some()
    }

    pub fn is_stock(&self) -> bool {
        self.kind == Kind::Stock
    }

    pub fn size_mib(&self) -> Option<f64> {
        self.size_bytes.map(|b| b as f64 / (1u64 << 20) as f64)
    }

    /// The benchmark on `profile`, if the row has one.
    pub fn bench(&self, profile: &str) -> Option<&Bench> {
        self.bench.get(profile)
    }

    /// Generation tokens/s on `profile`, only when the variant fit.
    pub fn tg_tps(&self, profile: &str) -> Option<f64> {
        self.bench(profile).filter(|b| b.fits()).and_then(|b| b.tg_tps)
    }
}

/// The whole file.
#[derive(Clone, Debug)]
pub struct Results {
    pub path: PathBuf,
    /// Profiles in header order.
    pub profiles: Vec<String>,
    /// Accuracy metric columns in header order (`*_acc`, `*_acc_norm`).
    pub acc_metrics: Vec<String>,
    pub variants: Vec<Variant>,
    /// Profiles measured on a device itself (`report --device-rows`), by profile name: the
    /// device and its rows. Empty as read from results.csv.
    pub measured: BTreeMap<String, super::device_rows::DeviceRows>,
    /// How `sweep --rebench` took the speeds again (`speeds.json` beside results.csv); None as
    /// read from results.csv alone, or when each row's speeds are from when it was measured.
    pub speeds: Option<super::speeds::SpeedPass>,
    /// The baseline and sweet spots on LiteRT beside their GGUF twins (`sweep --litert`,
    /// `litert/results.csv` beside results.csv); None as read from results.csv alone.
    pub twins: Option<Vec<super::twins::TwinRow>>,
}

impl Results {
    pub fn baseline(&self) -> Option<&Variant> {
        self.variants.iter().find(|v| v.kind == Kind::Baseline)
    }

    /// Variants that did not fail, in file order.
    pub fn ok(&self) -> impl Iterator<Item = &Variant> {
        self.variants.iter().filter(|v| !v.failed())
    }

    pub fn failed(&self) -> impl Iterator<Item = &Variant> {
        self.variants.iter().filter(|v| v.failed())
    }

    /// The primary accuracy metrics (`*_acc`, not `*_acc_norm`): the ones the quality budget checks.
    pub fn primary_acc_metrics(&self) -> Vec<&str> {
        self.acc_metrics.iter().filter(|m| m.ends_with("_acc")).map(String::as_str).collect()
    }
}

/// Read and parse `path`.
pub fn read_results(path: &Path) -> Result<Results> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_results(&text, path)
}

/// Split CSV text into records (RFC 4180, through the `csv` crate: quoted fields may hold commas,
/// doubled quotes and line breaks), each with the 1-based line it starts on. Blank lines are
/// skipped; records may have different lengths (the caller checks them against the header).
pub fn parse_csv(text: &str, path: &Path) -> Result<Vec<(usize, Vec<String>)>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut records = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            anyhow::anyhow!("{}:{line}: {e}", path.display())
        })?;
        // The line a record starts on, from its byte offset (quoted fields may span lines). The
        // csv crate's offset can point at the previous record's terminator or a blank line: skip them.
        let bytes = text.as_bytes();
        let mut start = (rec.position().map_or(0, |p| p.byte()) as usize).min(bytes.len());
        while start < bytes.len() && (bytes[start] == b'\n' || bytes[start] == b'\r') {
            start += 1;
        }
        let line = 1 + bytes[..start].iter().filter(|&&b| b == b'\n').count();
        records.push((line, rec.iter().map(str::to_string).collect()));
    }
    Ok(records)
}

/// Parse results.csv text; `path` only names the file in errors.
pub fn parse_results(text: &str, path: &Path) -> Result<Results> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let records = parse_csv(text, path)?;
    let Some(((_, header), rows)) = records.split_first() else {
        bail!("{}: empty file (expected a results.csv header line)", path.display());
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let col = column_index(&header, path)?;
    let profiles: Vec<String> = header.iter().filter_map(|h| h.strip_suffix(":tg_tps")).map(str::to_string).collect();
    for p in &profiles {
        for s in super::columns::PROFILE.iter().filter(|s| !super::columns::PROFILE_OPTIONAL.contains(s)) {
            if !col.contains_key(super::columns::profile_column(p, s).as_str()) {
                bail!("{}:1: profile `{p}` has no `{p}:{s}` column", path.display());
            }
        }
    }
    let acc_metrics: Vec<String> = header
        .iter()
        .filter(|h| !h.contains(':') && (h.ends_with("_acc") || h.ends_with("_acc_norm")))
        .cloned()
        .collect();
    let mut variants: Vec<Variant> = Vec::new();
    for (line, rec) in rows {
        if rec.len() != header.len() {
            bail!("{}:{line}: {} fields, but the header has {} columns", path.display(), rec.len(), header.len());
        }
        let row = Row { path, line: *line, rec, col: &col };
        let v = parse_variant(&row, &acc_metrics, &profiles)?;
        if v.kind == Kind::Baseline {
            if let Some(first) = variants.iter().find(|x| x.kind == Kind::Baseline) {
                bail!("{}:{line}: a second baseline row (the first is on line {})", path.display(), first.line);
            }
        }
        variants.push(v);
    }
    Ok(Results {
        path: path.to_path_buf(),
        profiles,
        acc_metrics,
        variants,
        measured: BTreeMap::new(),
        speeds: None,
        twins: None,
    })
}

/// Column name → index, checking no name repeats and every required column is there.
fn column_index<'h>(header: &'h [String], path: &Path) -> Result<BTreeMap<&'h str, usize>> {
    let mut col = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        if col.insert(h.as_str(), i).is_some() {
            bail!("{}:1: column `{h}` appears twice in the header", path.display());
        }
    }
    for c in super::columns::required() {
        if !col.contains_key(c) {
            bail!("{}:1: the header has no `{c}` column (is this a `microscale sweep` results.csv?)", path.display());
        }
    }
    Ok(col)
}

fn parse_variant(row: &Row, acc_metrics: &[String], profiles: &[String]) -> Result<Variant> {
    let (path, line) = (row.path, row.line);
    if row.text("variant").is_empty() {
        bail!("{}:{line}: empty `variant` name", path.display());
    }
    let kind = match row.text("kind") {
        "baseline" => Kind::Baseline,
        "microscale" => Kind::Microscale,
        "stock" => Kind::Stock,
        "source" => Kind::Source,
        other => bail!(
            "{}:{line}: column `kind`: `{other}` is not one of baseline, microscale, stock, source",
            path.display()
        ),
    };
    let mut acc = BTreeMap::new();
    for m in acc_metrics {
        if let Some(value) = row.num(m)? {
            let stderr = match row.col.contains_key(format!("{m}_stderr").as_str()) {
                true => row.num(&format!("{m}_stderr"))?,
                false => None,
            };
            acc.insert(m.clone(), Measure { value, stderr });
        }
    }
    let mut bench = BTreeMap::new();
    for p in profiles {
        let b = parse_bench(row, p)?;
        if b != Bench::default() {
            bench.insert(p.clone(), b);
        }
    }
    let measure = |v: &str, se: &str| -> Result<Option<Measure>> {
        Ok(row.num(v)?.map(|value| Measure { value, stderr: row.num(se).ok().flatten() }))
    };
    // Check the stderr columns' syntax too (the closure above tolerates them).
    row.num("ppl_stderr")?;
    row.num("kld_stderr")?;
    Ok(Variant {
        line,
        name: row.text("variant").to_string(),
        kind,
        recipe: row.text("recipe").to_string(),
        method: row.text("method").to_string(),
        prune_ratio: row.num("prune_ratio")?,
        quant: row.text("quant").to_string(),
        size_bytes: row.int("file_size_bytes")?,
        n_params: row.int("n_params")?,
        bpw: row.num("bits_per_weight")?,
        ppl: measure("ppl", "ppl_stderr")?,
        kld: measure("kld", "kld_stderr")?,
        same_top: row.num("same_top")?,
        acc,
        bench,
        status: match row.text("status") {
            s @ ("ok" | "error" | "crash" | "timeout") => s.to_string(),
            other => {
                bail!("{}:{line}: column `status`: `{other}` is not one of ok, error, crash, timeout", path.display())
            }
        },
        error: row.opt("error"),
        eval_chunks: row.opt("eval_chunks"),
        eval_limit: row.opt("eval_limit"),
        gpu_layers: row.col.contains_key("gpu_layers").then(|| row.opt("gpu_layers")).flatten(),
        microscale: row.opt("microscale"),
        llama_cpp: row.opt("llama_cpp"),
        date: row.opt("date"),
    })
}

/// One profile's `P:…` columns of a row.
fn parse_bench(row: &Row, p: &str) -> Result<Bench> {
    let c = |s: &str| super::columns::profile_column(p, s);
    let status = match row.text(&c("status")) {
        "" => None,
        text => Some(Status::parse(text).ok_or_else(|| {
            anyhow::anyhow!(
                "{}:{}: column `{}`: `{text}` is not one of fits, oom, crash, error, timeout",
                row.path.display(),
                row.line,
                c("status")
            )
        })?),
    };
    Ok(Bench {
        status,
        peak_rss_mib: row.num(&c("peak_rss_mib"))?,
        pp_tps: row.num(&c("pp_tps"))?,
        pp_tps_sd: row.num(&c("pp_tps_sd"))?,
        tg_tps: row.num(&c("tg_tps"))?,
        tg_tps_sd: row.num(&c("tg_tps_sd"))?,
        load_s: row.num(&c("load_s"))?,
        ttft_s: row.num(&c("ttft_s"))?,
        mem_cap_mib: row.num(&c("mem_cap_mib"))?,
        repacked: match row.col.contains_key(c("repacked").as_str()).then(|| row.text(&c("repacked"))) {
            None | Some("") => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(other) => bail!(
                "{}:{}: column `{}`: `{other}` is not yes, no or empty",
                row.path.display(),
                row.line,
                c("repacked")
            ),
        },
    })
}

struct Row<'a> {
    path: &'a Path,
    line: usize,
    rec: &'a [String],
    col: &'a BTreeMap<&'a str, usize>,
}

impl Row<'_> {
    fn text(&self, name: &str) -> &str {
        self.rec[self.col[name]].trim()
    }

    fn opt(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|s| !s.is_empty()).map(str::to_string)
    }

    fn num(&self, name: &str) -> Result<Option<f64>> {
        let s = self.text(name);
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            Ok(_) => bail!("{}:{}: column `{name}`: `{s}` is not a finite number", self.path.display(), self.line),
            Err(_) => bail!("{}:{}: column `{name}`: `{s}` is not a number", self.path.display(), self.line),
        }
    }

    fn int(&self, name: &str) -> Result<Option<u64>> {
        let s = self.text(name);
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<u64>() {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                bail!("{}:{}: column `{name}`: `{s}` is not a non-negative integer", self.path.display(), self.line)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_line_breaks() {
        let p = Path::new("x.csv");
        let r = parse_csv("a,b\r\n\"x,1\",\"say \"\"hi\"\"\nthere\"\n\nc,\n", p).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], (1, vec!["a".to_string(), "b".to_string()]));
        assert_eq!(r[1], (2, vec!["x,1".to_string(), "say \"hi\"\nthere".to_string()]));
        assert_eq!(r[2], (5, vec!["c".to_string(), String::new()]));
    }
}
