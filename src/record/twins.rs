//! The study's picks on a phone's own runtime beside their GGUF twins (`export --study`):
//! `OUT/litert/results.csv`, one row per file and runtime — the GGUF through llama.cpp and the
//! LiteRT file exported from it through LiteRT's interpreter, on the same windows, their speeds
//! measured one after the other on this host.

use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

/// Where `export --study` keeps its files and rows, inside a sweep's output directory.
pub fn twins_dir(study: &Path) -> PathBuf {
    study.join("litert")
}

pub fn twins_csv(study: &Path) -> PathBuf {
    twins_dir(study).join("results.csv")
}

/// The runtimes a row names: the GGUF through llama.cpp, the `.tflite` through LiteRT.
pub const RUNTIME_LLAMA_CPP: &str = "llama.cpp";
pub const RUNTIME_LITERT: &str = "litert";

/// One file on one runtime.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TwinRow {
    /// The study's variant the file is (or was exported from).
    pub variant: String,
    /// Why it was picked: `baseline`, or the profiles whose sweet spot it is (`sweet spot: host`).
    pub role: String,
    /// `llama.cpp` (the GGUF) or `litert` (the .tflite).
    pub runtime: String,
    pub file: String,
    /// The weights' format: the GGUF's type (`q4_1`), or LiteRT's recipe (`weight_only_int8`).
    pub weights: String,
    pub size_bytes: u64,
    pub ppl: Option<f64>,
    pub ppl_stderr: Option<f64>,
    pub kld: Option<f64>,
    pub kld_stderr: Option<f64>,
    pub same_top: Option<f64>,
    pub pp_tps: Option<f64>,
    pub pp_tps_sd: Option<f64>,
    pub tg_tps: Option<f64>,
    pub tg_tps_sd: Option<f64>,
    pub load_s: Option<f64>,
    /// Peak resident set of the process that ran the benchmark (for LiteRT, the Python process
    /// holding the interpreter), MiB.
    pub peak_rss_mib: Option<f64>,
    pub threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Perplexity and KL divergence windows.
    pub eval_chunks: usize,
    /// Seconds and peak memory of the conversion (LiteRT rows).
    pub export_s: Option<f64>,
    pub export_peak_rss_mib: Option<f64>,
    pub date: String,
}

pub fn write_twins(path: &Path, rows: &[TwinRow]) -> Result<()> {
    let mut file = crate::util::atomic::TempOutput::create(path)?;
    {
        let mut w = csv::Writer::from_writer(file.writer());
        for r in rows {
            w.serialize(r)?;
        }
        w.flush()?;
    }
    file.commit()
}

/// The rows, or None when the study has none; a file that does not parse is an error naming it.
pub fn read_twins(path: &Path) -> Result<Option<Vec<TwinRow>>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut r = csv::Reader::from_path(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let rows = r
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.map_err(|e| anyhow!("{}: row {}: {e}", path.display(), i + 1)))
        .collect::<Result<Vec<TwinRow>>>()?;
    Ok(Some(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(runtime: &str) -> TwinRow {
        TwinRow {
            variant: "as-shipped".into(),
            role: "sweet spot: host".into(),
            runtime: runtime.into(),
            file: "x".into(),
            weights: "q4_1".into(),
            size_bytes: 98362432,
            ppl: Some(23.5),
            ppl_stderr: Some(0.7),
            kld: None,
            kld_stderr: None,
            same_top: None,
            pp_tps: Some(300.0),
            pp_tps_sd: Some(3.0),
            tg_tps: Some(100.0),
            tg_tps_sd: None,
            load_s: Some(0.1),
            peak_rss_mib: Some(130.0),
            threads: 2,
            n_prompt: 64,
            n_gen: 16,
            eval_chunks: 40,
            export_s: None,
            export_peak_rss_mib: None,
            date: "2026-12-08T00:00:00Z".into(),
        }
    }

    #[test]
    fn rows_read_back_as_written_and_a_damaged_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("results.csv");
        assert_eq!(read_twins(&path).unwrap(), None);
        let rows = vec![row("llama.cpp"), row("litert")];
        write_twins(&path, &rows).unwrap();
        assert_eq!(read_twins(&path).unwrap(), Some(rows));
        let text = std::fs::read_to_string(&path).unwrap().replace("98362432", "many");
        std::fs::write(&path, text).unwrap();
        let err = read_twins(&path).unwrap_err().to_string();
        assert!(err.contains("results.csv: row 1"), "{err}");
    }
}
