//! Per-variant item files: what each perplexity window and each task item scored, so that a variant
//! can be compared with the baseline (or a stock quant) on the same tokens and the same items,
//! with paired confidence intervals. `sweep` writes one per measured variant beside results.csv
//! (`OUT/items/NAME.json`); `report` reads them. results.csv keeps one row per variant.
//!
//! The format (JSON, keys in a fixed order):
//!
//! ```json
//! {
//!   "format": "microscale-items 1",
//!   "variant": "q8_0",
//!   "perplexity": { "tokens_sha256": "…", "tokens_per_window": 255, "window_nll": [612.3, …] },
//!   "kld": { "tokens_sha256": "…", "tokens_per_window": 255, "window_kld": [1.02, …] },
//!   "accuracy": { "sst2_acc": { "items_sha256": "…", "correct": "0110…" }, … }
//! }
//! ```
//!
//! - `window_nll[w]`: the sum over window w's scored tokens of the negative log-likelihood (nats);
//!   `window_kld[w]`: the sum of the per-token KL divergences from the baseline. Per-window sums are
//!   all a bootstrap over windows needs (the mean per-token difference of two models is the sum of
//!   their window differences over the tokens), and they keep a file small (about 20 bytes per
//!   window) whatever the text's length.
//! - `tokens_sha256`: sha256 of the windows' token ids (i32 little-endian, as scored), so that two
//!   files are paired only when they scored the same tokens.
//! - `correct`: one character per item, `1` when the metric's pick was right, in evaluation order;
//!   `items_sha256` identifies the items (contexts, choices and labels in that order).
//!
//! A section is absent when the variant did not measure it (the baseline has no `kld`).

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `format` value this version writes and reads.
pub const FORMAT: &str = "microscale-items 1";

/// Per-token statistics of one pass over the perplexity windows, summed per window.
#[derive(Clone, Debug, PartialEq)]
pub struct Windows {
    pub tokens_sha256: String,
    /// Scored tokens in each window (the same for every window).
    pub tokens_per_window: usize,
    /// The per-window sums (`window_nll` or `window_kld`).
    pub sums: Vec<f64>,
}

/// Per-item outcomes of one accuracy metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Items {
    pub items_sha256: String,
    /// `0`/`1` per item.
    pub correct: String,
}

impl Items {
    /// The outcomes as 0.0 / 1.0.
    pub fn outcomes(&self) -> Vec<f64> {
        self.correct.bytes().map(|b| f64::from(b == b'1')).collect()
    }
}

/// One variant's item file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ItemRecord {
    pub variant: String,
    /// Negative log-likelihood per window, on the perplexity text.
    pub perplexity: Option<Windows>,
    /// KL divergence from the baseline per window.
    pub kld: Option<Windows>,
    /// By accuracy column (`sst2_acc`, `arc_easy_acc_norm`, …).
    pub accuracy: BTreeMap<String, Items>,
}

/// The file's JSON shape (the window sums under their own names).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    format: String,
    variant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    perplexity: Option<NllJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kld: Option<KldJson>,
    #[serde(default)]
    accuracy: BTreeMap<String, Items>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NllJson {
    tokens_sha256: String,
    tokens_per_window: usize,
    window_nll: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KldJson {
    tokens_sha256: String,
    tokens_per_window: usize,
    window_kld: Vec<f64>,
}

/// `OUT/items/NAME.json`.
pub fn items_path(out: &Path, variant: &str) -> PathBuf {
    out.join("items").join(format!("{variant}.json"))
}

/// sha256 of i32 token ids (little-endian), as hex.
pub fn tokens_sha256<'a>(windows: impl IntoIterator<Item = &'a [i32]>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for w in windows {
        for t in w {
            h.update(t.to_le_bytes());
        }
    }
    hex(&h.finalize())
}

/// sha256 of strings, each followed by a 0 byte (so that `["ab", "c"]` and `["a", "bc"]` differ).
pub fn strings_sha256<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ItemRecord {
    fn to_json(&self) -> FileJson {
        FileJson {
            format: FORMAT.into(),
            variant: self.variant.clone(),
            perplexity: self.perplexity.as_ref().map(|w| NllJson {
                tokens_sha256: w.tokens_sha256.clone(),
                tokens_per_window: w.tokens_per_window,
                window_nll: w.sums.clone(),
            }),
            kld: self.kld.as_ref().map(|w| KldJson {
                tokens_sha256: w.tokens_sha256.clone(),
                tokens_per_window: w.tokens_per_window,
                window_kld: w.sums.clone(),
            }),
            accuracy: self.accuracy.clone(),
        }
    }

    /// The file's bytes (pretty JSON with one window sum per line is larger than it needs to be:
    /// arrays are written compactly on one line each).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut s = serde_json::to_string(&self.to_json())?;
        s.push('\n');
        Ok(s.into_bytes())
    }

    /// Write the record atomically to `path` (its folder is made if missing).
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        crate::util::atomic::write_file(path, &self.to_bytes()?)
    }

    /// Parse and check an item file's text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ItemRecord> {
        let shown = path.display();
        let j: FileJson = serde_json::from_str(text)
            .map_err(|e| anyhow!("{shown}: not a microscale item file ({})", e.to_string().replace('\n', " ")))?;
        if j.format != FORMAT {
            bail!("{shown}: format `{}`, this microscale reads `{FORMAT}`", j.format);
        }
        let perplexity = j.perplexity.map(|w| Windows {
            tokens_sha256: w.tokens_sha256,
            tokens_per_window: w.tokens_per_window,
            sums: w.window_nll,
        });
        let kld = j.kld.map(|w| Windows {
            tokens_sha256: w.tokens_sha256,
            tokens_per_window: w.tokens_per_window,
            sums: w.window_kld,
        });
        for (what, w) in [("perplexity", &perplexity), ("kld", &kld)] {
            if let Some(w) = w {
                if w.sums.is_empty() || w.tokens_per_window == 0 {
                    bail!("{shown}: `{what}` has no window or no token per window");
                }
            }
        }
        for (m, items) in &j.accuracy {
            if items.correct.is_empty() || items.correct.bytes().any(|b| b != b'0' && b != b'1') {
                bail!("{shown}: accuracy `{m}`: `correct` must be a non-empty string of 0 and 1");
            }
        }
        Ok(ItemRecord { variant: j.variant, perplexity, kld, accuracy: j.accuracy })
    }

    /// Read `path`: `Ok(None)` when there is no such file (a sweep written before item files, or a
    /// failed variant), an error naming the file when it is there but malformed.
    pub fn read(path: &Path) -> Result<Option<ItemRecord>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(ItemRecord::parse(&text, path)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => bail!("{}: cannot read ({e})", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut r = ItemRecord { variant: "q8_0".into(), ..Default::default() };
        r.perplexity = Some(Windows { tokens_sha256: "ab".into(), tokens_per_window: 3, sums: vec![1.5, 0.1 + 0.2] });
        r.accuracy.insert("sst2_acc".into(), Items { items_sha256: "cd".into(), correct: "0110".into() });
        let bytes = r.to_bytes().unwrap();
        let p = Path::new("items/q8_0.json");
        assert_eq!(ItemRecord::parse(std::str::from_utf8(&bytes).unwrap(), p).unwrap(), r);
        let text = String::from_utf8(bytes).unwrap();
        let e = ItemRecord::parse(&text.replace("0110", "01x0"), p).unwrap_err().to_string();
        assert!(e.starts_with("items/q8_0.json: accuracy `sst2_acc`"), "{e}");
        let e = ItemRecord::parse(&text.replace("items 1", "items 9"), p).unwrap_err().to_string();
        assert!(e.contains("items/q8_0.json: format"), "{e}");
        let e = ItemRecord::parse("{", p).unwrap_err().to_string();
        assert!(e.starts_with("items/q8_0.json: not a microscale item file") && !e.contains('\n'), "{e}");
    }
}
