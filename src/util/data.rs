//! Where the evaluation and calibration data live.
//!
//! The project ships its data sets in `data/` (see `data/README.md`). The folder is found from the
//! binary, never from the current directory, so `microscale eval` works from anywhere:
//! `--data-dir DIR` first, then `$MICROSCALE_DATA`, then `share/microscale/data` beside the
//! binary's folder (an installed layout), then `data/` of the checkout the binary was built from.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The environment variable that points at a data folder.
pub const ENV: &str = "MICROSCALE_DATA";

/// WikiText-2 raw test split: perplexity and KL divergence.
pub const WIKITEXT_TEST: &str = "wikitext-2/wiki.test.raw";
/// WikiText-2 tokenized validation split: calibration (never the test split).
pub const CALIB_TEXT: &str = "wikitext-2/wiki.valid.tokens";
pub const SST2_DEV: &str = "sst2/dev.tsv";
pub const ARC_EASY_DEV: &str = "arc/ARC-Easy-Dev.jsonl";
pub const ARC_CHALLENGE_DEV: &str = "arc/ARC-Challenge-Dev.jsonl";

/// A resolved data folder and what chose it (for error messages).
#[derive(Clone, Debug, PartialEq)]
pub struct DataDir {
    pub root: PathBuf,
    pub origin: String,
}

impl DataDir {
    /// The data folder: `explicit` (a `--data-dir` flag) if given, else the environment, else the
    /// folders found from the binary.
    pub fn resolve(explicit: Option<&Path>) -> DataDir {
        if let Some(p) = explicit {
            return DataDir { root: p.to_path_buf(), origin: "--data-dir".into() };
        }
        if let Some(p) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
            return DataDir { root: PathBuf::from(p), origin: format!("${ENV}") };
        }
        let installed = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().and_then(Path::parent).map(|p| p.join("share/microscale/data")));
        if let Some(dir) = installed.filter(|d| d.is_dir()) {
            return DataDir { root: dir, origin: "the installed share/microscale/data".into() };
        }
        DataDir { root: Path::new(env!("CARGO_MANIFEST_DIR")).join("data"), origin: "the checkout's data/".into() }
    }

    /// A file of the data folder, which must exist.
    pub fn file(&self, relative: &str) -> Result<PathBuf> {
        let path = self.root.join(relative);
        if !path.is_file() {
            bail!(
                "{}: evaluation data not found (data folder from {}); pass --data-dir DIR or set {ENV} to a copy of microscale's data/ folder",
                path.display(),
                self.origin
            );
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_data_is_found_and_a_flag_wins() {
        // (The environment variable is not touched here: tests run in parallel threads.)
        if std::env::var_os(ENV).is_none() {
            let d = DataDir::resolve(None);
            assert!(d.file(WIKITEXT_TEST).is_ok(), "{d:?}");
        }
        let d = DataDir::resolve(Some(Path::new("/nonexistent")));
        let e = d.file(SST2_DEV).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/sst2/dev.tsv") && e.contains("--data-dir") && e.contains(ENV), "{e}");
    }
}
