//! Result rows: model identity (file, sha256 prefix, size, bits per weight), the metric with its
//! standard error, and provenance (tool and engine versions, date). Appended to a CSV file one row
//! at a time and flushed, so an interrupted run keeps every row written so far.

use crate::inspect::inspect;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
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

pub fn sha256_prefix(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect())
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
    "model,sha256,size_bytes,n_params,bits_per_weight,metric,value,stderr,items,wall_s,status,microscale,llama_cpp,date";

/// Append rows for one model to `path` (header written when the file is new), flushed per row.
pub fn append_csv(path: &Path, model: &ModelId, rows: &[MetricRow]) -> Result<()> {
    let new = !path.exists() || std::fs::metadata(path)?.len() == 0;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open for appending", path.display()))?;
    if new {
        writeln!(f, "{CSV_HEADER}")?;
    }
    let date = utc_now();
    for r in rows {
        writeln!(
            f,
            "{},{},{},{},{:.4},{},{},{},{},{:.2},{},{},{},{}",
            csv_field(&model.file),
            model.sha256,
            model.size_bytes,
            model.n_params,
            model.bits_per_weight,
            csv_field(&r.metric),
            r.value,
            r.stderr,
            r.items,
            r.wall_s,
            csv_field(&r.status),
            env!("CARGO_PKG_VERSION"),
            crate::engine::LLAMA_CPP_SYS_VERSION,
            date
        )?;
        f.flush()?;
    }
    Ok(())
}

/// Quote a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
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
