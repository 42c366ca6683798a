//! Result rows: model identity (file, sha256 prefix, size, bits per weight), the metric with its
//! standard error, and provenance (tool and engine versions, date). Appended to a CSV file one row
//! at a time and flushed, so an interrupted run keeps every row written so far.

use crate::source::inspect::inspect;
use anyhow::{Context, Result};
use std::path::Path;

/// Who a row is about.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelId {
    pub file: String,
    /// First 12 hex digits of the file's sha256.
    pub sha256: String,
    pub size_bytes: u64,
    pub n_params: u64,
    pub bits_per_weight: f64,
}

impl ModelId {
    pub fn of(path: &Path) -> Result<ModelId> {
        let summary = inspect(path)?;
        Ok(ModelId {
            file: path.display().to_string(),
            sha256: sha256_prefix(path)?,
            size_bytes: std::fs::metadata(path)?.len(),
            n_params: summary.n_params(),
            bits_per_weight: summary.bits_per_weight(),
        })
    }
}

impl ModelId {
    /// A LiteRT file's identity: its weights counted in the GGUF it was exported from, its bits
    /// per weight from its own size (signatures and all).
    pub fn litert(path: &Path, exported_from: &Path) -> Result<ModelId> {
        let n_params = inspect(exported_from)?.n_params();
        let size_bytes = std::fs::metadata(path)?.len();
        Ok(ModelId {
            file: path.display().to_string(),
            sha256: sha256_prefix(path)?,
            size_bytes,
            n_params,
            bits_per_weight: if n_params > 0 { 8.0 * size_bytes as f64 / n_params as f64 } else { 0.0 },
        })
    }

    /// The identity of a file microscale cannot read (its rows still say which file).
    pub fn unreadable(path: &Path) -> ModelId {
        ModelId {
            file: path.display().to_string(),
            sha256: sha256_prefix(path).unwrap_or_default(),
            size_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            n_params: 0,
            bits_per_weight: 0.0,
        }
    }
}

/// The first 12 hex digits of the file's SHA-256: a file's identity in rows.
pub fn sha256_prefix(path: &Path) -> Result<String> {
    let mut hex = crate::util::digest::sha256_file(path)?;
    hex.truncate(12);
    Ok(hex)
}

/// One measured number.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MetricRow {
    pub metric: String,
    pub value: f64,
    /// Standard error (0 where the metric has none).
    pub stderr: f64,
    /// Items (tokens for perplexity, questions for tasks) behind the number.
    pub items: usize,
    pub wall_s: f64,
    /// How the measurement ended: `ok` for evaluations; a benchmark run's status (`fits`, `oom`,
    /// `crash`, `error`, `timeout`) for its rows.
    pub status: String,
}

pub const CSV_HEADER: &str =
    "model,sha256,size_bytes,n_params,bits_per_weight,metric,value,stderr,items,wall_s,status,\
     gpu_layers,microscale,llama_cpp,date";

/// A CSV file opened for appending whole records, its header written first when the file is new;
/// every record is flushed to the file as it is written and synced when done, so an interrupted
/// run keeps every row written so far. (`eval --csv`, `bench --csv` and results.csv all use it.)
pub struct CsvAppender {
    path: std::path::PathBuf,
    writer: csv::Writer<std::fs::File>,
}

impl CsvAppender {
    pub fn open<H: AsRef<[u8]>>(path: &Path, header: impl IntoIterator<Item = H>) -> Result<CsvAppender> {
        crate::util::atomic::refuse_non_regular(path)?;
        let new = !path.exists() || std::fs::metadata(path)?.len() == 0;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot open for appending", path.display()))?;
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        if new {
            writer.write_record(header)?;
        }
        Ok(CsvAppender { path: path.to_path_buf(), writer })
    }

    pub fn append<F: AsRef<[u8]>>(&mut self, record: impl IntoIterator<Item = F>) -> Result<()> {
        self.writer.write_record(record)?;
        self.writer.flush().with_context(|| format!("{}: cannot write", self.path.display()))?;
        Ok(())
    }

    /// Sync the file to disk.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let file = self.writer.into_inner().map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error()))?;
        file.sync_data().with_context(|| format!("{}: cannot sync", path.display()))
    }
}

/// Append rows for one model to `path` (header written when the file is new), flushed per row.
/// `gpu_layers` is how the model was loaded (`--gpu-layers`). A file with another header (an
/// older microscale's columns) is refused rather than given misaligned rows.
pub fn append_csv(path: &Path, model: &ModelId, rows: &[MetricRow], gpu_layers: u32) -> Result<()> {
    check_header(path, CSV_HEADER)?;
    let mut out = CsvAppender::open(path, CSV_HEADER.split(','))?;
    let date = utc_now();
    for r in rows {
        out.append([
            model.file.clone(),
            model.sha256.clone(),
            model.size_bytes.to_string(),
            model.n_params.to_string(),
            format!("{:.4}", model.bits_per_weight),
            r.metric.clone(),
            r.value.to_string(),
            r.stderr.to_string(),
            r.items.to_string(),
            format!("{:.2}", r.wall_s),
            r.status.clone(),
            gpu_layers.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
            crate::engine::LLAMA_CPP_SYS_VERSION.to_string(),
            date.clone(),
        ])?;
    }
    out.finish()
}

/// Refuse to append to a non-empty CSV whose first line is not `header`.
fn check_header(path: &Path, header: &str) -> Result<()> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(()) };
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut first)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let first = first.trim_end_matches(['\n', '\r']);
    if !first.is_empty() && first != header {
        anyhow::bail!(
            "{}: its header has other columns than this microscale writes ({header}); append to a new file",
            path.display()
        );
    }
    Ok(())
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no time-zone database needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_looks_right() {
        let d = super::utc_now();
        assert_eq!(d.len(), 20);
        assert!(d.starts_with("20"));
    }
}
