//! Importance matrices: per-input-channel activation statistics that steer quantization, in
//! llama.cpp's imatrix GGUF format (what `llama-imatrix` writes and `llama-quantize --imatrix`
//! reads) and its legacy `.dat` format. Both `stock-quantize` and our own quantizers read the same
//! file, through the same arithmetic (`sums / count`, as llama-quantize's `load_imatrix` does).

use super::{GgufFile, GgufValue, GgufWriter, Metadata, TensorInfo};
use crate::quant::GgmlType;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One weight matrix's statistics: `sums[j*ne0 + i]` is the sum over calibration tokens of the
/// squared activation of input channel `i` (matrix `j` for stacked experts), `counts[j]` the
/// number of tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct ImatrixEntry {
    pub sums: Vec<f32>,
    pub counts: Vec<f32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// Keyed by the GGUF weight name (`blk.0.attn_q.weight`).
    pub entries: BTreeMap<String, ImatrixEntry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
    /// Keys beyond llama.cpp's (microscale keeps its calibration results here).
    pub extra: Metadata,
    /// The file it was read from (for error messages).
    pub path: Option<std::path::PathBuf>,
}

impl Imatrix {
    /// The importance weights of a tensor whose rows have `ne0` columns, as llama-quantize
    /// computes them: mean squared activation per column (1 where no token was seen).
    pub fn weights(&self, tensor: &str, ne0: usize) -> Option<Vec<f32>> {
        let e = self.entries.get(tensor)?;
        if e.sums.len() != ne0 * e.counts.len().max(1) || e.counts.len() != 1 {
            return None;
        }
        let count = e.counts[0].round();
        Some(if count > 0.0 { e.sums.iter().map(|s| s / count).collect() } else { vec![1.0; ne0] })
    }

    /// [`Self::weights`], but an entry whose size disagrees with the tensor is an error naming
    /// both, as llama-quantize refuses it (a missing entry is not: the tensor is quantized
    /// without importance weights).
    pub fn weights_checked(&self, tensor: &str, ne0: usize) -> Result<Option<Vec<f32>>> {
        let Some(e) = self.entries.get(tensor) else { return Ok(None) };
        let file = self.path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
        if e.counts.len() != 1 {
            bail!(
                "{file}imatrix entry {tensor} holds {} matrices (experts); microscale quantizes dense models",
                e.counts.len()
            );
        }
        if e.sums.len() != ne0 {
            bail!(
                "{file}imatrix entry {tensor} has {} values, but the tensor's rows have {ne0} (an imatrix of another model?)",
                e.sums.len()
            );
        }
        Ok(self.weights(tensor, ne0))
    }

    pub fn load(path: &Path) -> Result<Imatrix> {
        let shown = path.display();
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => bail!("{shown}: not a regular file (an importance matrix is a GGUF or .dat file)"),
            Err(e) => bail!("{shown}: cannot read ({e})"),
        }
        let mut magic = [0u8; 4];
        let n = std::io::Read::read(
            &mut std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?,
            &mut magic,
        )
        .with_context(|| format!("{shown}: cannot read"))?;
        let m = if n == 4 && &magic == b"GGUF" { load_gguf(path) } else { load_legacy(path) };
        let mut m = m
            .and_then(|m| m.validate().map(|()| m))
            .map_err(|e| anyhow!("{}: not a usable imatrix: {e:#}", path.display()))?;
        m.path = Some(path.to_path_buf());
        Ok(m)
    }

    /// Refuse statistics no calibration can produce, as llama.cpp's quantizer does: a sum of
    /// squared activations or a token count that is NaN, infinite or negative (the quantizers
    /// would divide by it and write NaN scales), and entries whose sums do not split into their
    /// matrices.
    pub fn validate(&self) -> Result<()> {
        for (name, e) in &self.entries {
            if e.counts.is_empty() || !e.sums.len().is_multiple_of(e.counts.len()) {
                bail!("entry {name}: {} sums do not split into {} matrices", e.sums.len(), e.counts.len());
            }
            let bad = |v: &[f32]| v.iter().position(|x| !x.is_finite() || *x < 0.0);
            if let Some(i) = bad(&e.sums) {
                bail!(
                    "entry {name}: sum {i} is {} (sums of squared activations are finite and non-negative; llama.cpp refuses this too)",
                    e.sums[i]
                );
            }
            if let Some(i) = bad(&e.counts) {
                bail!("entry {name}: token count {i} is {} (counts are finite and non-negative)", e.counts[i]);
            }
        }
        Ok(())
    }

    /// How many of the entries name one of `tensors`, and the names of those that name none.
    pub fn coverage<'a>(&self, tensors: impl IntoIterator<Item = &'a str>) -> (usize, Vec<&str>) {
        let known: std::collections::HashSet<&str> = tensors.into_iter().collect();
        let (matched, unmatched): (Vec<&str>, Vec<&str>) =
            self.entries.keys().map(String::as_str).partition(|n| known.contains(n));
        (matched.len(), unmatched)
    }

    /// Refuse an importance matrix none of whose entries names one of the model's `tensors` (one
    /// made for another model would otherwise quantize as if absent), and warn with counts about
    /// entries that name none (unless `quiet`).
    pub fn check_names<'a>(&self, tensors: impl IntoIterator<Item = &'a str>, quiet: bool) -> Result<()> {
        let (matched, unmatched) = self.coverage(tensors);
        if matched == 0 {
            bail!(
                "{}: none of its {} entries names a tensor of this model (e.g. {:?}); an imatrix of another model?",
                self.shown(),
                self.entries.len(),
                unmatched.first().copied().unwrap_or_default()
            );
        }
        if !unmatched.is_empty() && !quiet {
            eprintln!(
                "warning: {}: {} of its {} entries name no tensor of this model and are ignored (e.g. {:?})",
                self.shown(),
                unmatched.len(),
                self.entries.len(),
                unmatched[0]
            );
        }
        Ok(())
    }

    /// The file it came from, for messages.
    pub fn shown(&self) -> String {
        self.path.as_ref().map_or("the importance matrix".to_string(), |p| p.display().to_string())
    }

    /// The `quantize.imatrix.*` keys llama-quantize adds to a file it quantized with this
    /// imatrix: the file as named (cut to 127 bytes, as its fixed-size override buffer does), the
    /// first dataset, the number of entries and the number of chunks (when known).
    pub fn quantize_keys(&self) -> Metadata {
        let cut = |s: &str| {
            let mut end = s.len().min(127);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        let mut keys = vec![];
        if let Some(p) = &self.path {
            keys.push(("quantize.imatrix.file".to_string(), GgufValue::String(cut(&p.to_string_lossy()))));
        }
        if let Some(d) = self.datasets.first() {
            keys.push(("quantize.imatrix.dataset".to_string(), GgufValue::String(cut(d))));
        }
        keys.push(("quantize.imatrix.entries_count".to_string(), GgufValue::U32(self.entries.len() as u32)));
        if self.chunk_count > 0 {
            keys.push(("quantize.imatrix.chunks_count".to_string(), GgufValue::U32(self.chunk_count)));
        }
        keys
    }

    /// Add another imatrix's statistics to this one, as llama-imatrix's `--in-file` does: sums
    /// and counts add up entry by entry, datasets are listed one after the other, and the chunk
    /// count becomes the most tokens any entry saw divided by the chunk size.
    pub fn merge(&mut self, other: &Imatrix) -> Result<()> {
        let name =
            |m: &Imatrix| m.path.as_ref().map_or("the files merged so far".to_string(), |p| p.display().to_string());
        let my_name = name(self);
        if self.chunk_size == 0 {
            self.chunk_size = other.chunk_size;
        }
        // Two calibrations of one model share their entries' names; none in common is two models.
        if !self.entries.is_empty() && !other.entries.keys().any(|k| self.entries.contains_key(k)) {
            bail!(
                "{}: none of its {} entries is in {my_name} (imatrices of different models?)",
                name(other),
                other.entries.len()
            );
        }
        for (tensor, e) in &other.entries {
            let mine = self
                .entries
                .entry(tensor.clone())
                .or_insert_with(|| ImatrixEntry { sums: vec![0.0; e.sums.len()], counts: vec![0.0; e.counts.len()] });
            if mine.sums.len() != e.sums.len() || mine.counts.len() != e.counts.len() {
                bail!(
                    "{}: entry {tensor} has {} values, {} has {} (imatrices of different models?)",
                    name(other),
                    e.sums.len(),
                    my_name,
                    mine.sums.len()
                );
            }
            mine.sums.iter_mut().zip(&e.sums).for_each(|(a, b)| *a += b);
            mine.counts.iter_mut().zip(&e.counts).for_each(|(a, b)| *a += b);
        }
        // Two valid files can still add up past f32's range.
        self.validate().map_err(|e| anyhow!("{my_name} + {}: {e:#}", name(other)))?;
        self.datasets.extend(other.datasets.iter().cloned());
        let max_count = self.entries.values().flat_map(|e| e.counts.iter().copied()).fold(0.0f32, f32::max);
        if self.chunk_size > 0 {
            self.chunk_count = (max_count as u64 / self.chunk_size as u64) as u32;
        }
        Ok(())
    }

    /// Per-tensor statistics of the mean squared activations, as `llama-imatrix
    /// --show-statistics` computes them (sorted as it sorts them: by tensor kind, then by total).
    pub fn statistics(&self) -> Vec<TensorStats> {
        let mut stats: Vec<TensorStats> = self.entries.iter().filter_map(|(n, e)| tensor_stats(n, e)).collect();
        // Cosine similarity with the same tensor one block earlier.
        let by_name: BTreeMap<String, Vec<f32>> =
            self.entries.iter().filter_map(|(n, e)| mean_squares(e).map(|a| (n.clone(), a))).collect();
        for s in &mut stats {
            // Outside the blocks (layer usize::MAX) the "previous" tensor is the tensor itself.
            let renumbered = |l| crate::util::tensor_name::renumbered(&s.tensor, l).unwrap_or_else(|| s.tensor.clone());
            if let Some(prev) = s.layer.checked_sub(1).map(renumbered) {
                if let (Some(a), Some(b)) = (by_name.get(&s.tensor), by_name.get(&prev)) {
                    s.cos_sim = Some(cosine(a, b));
                }
            }
        }
        stats.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.total.total_cmp(&a.total)));
        stats
    }

    /// Write in llama.cpp's imatrix GGUF format.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, vec![])
    }

    /// [`Self::save`] with more tensors after the imatrix's, each written from its closure in
    /// turn (so that only one is in memory at a time).
    pub fn save_with(&self, path: &Path, extra: Vec<(TensorInfo, ExtraTensor)>) -> Result<()> {
        let meta: Metadata = vec![
            ("general.type".into(), GgufValue::String("imatrix".into())),
            ("imatrix.datasets".into(), GgufValue::strings(self.datasets.iter().cloned())),
            ("imatrix.chunk_count".into(), GgufValue::U32(self.chunk_count)),
            ("imatrix.chunk_size".into(), GgufValue::U32(self.chunk_size)),
        ];
        let mut meta = meta;
        meta.extend(self.extra.iter().cloned());
        let mut headers = Vec::new();
        for (name, e) in &self.entries {
            let n_mat = e.counts.len() as u64;
            let ne0 = e.sums.len() as u64 / n_mat.max(1);
            headers.push(TensorInfo::new(&format!("{name}.in_sum2"), vec![ne0, n_mat], GgmlType::F32)?);
            headers.push(TensorInfo::new(&format!("{name}.counts"), vec![1, n_mat], GgmlType::F32)?);
        }
        headers.extend(extra.iter().map(|(t, _)| t.clone()));
        let mut w = GgufWriter::create(path, &meta, headers)?;
        for (name, e) in &self.entries {
            w.write_tensor(&format!("{name}.in_sum2"), &f32_bytes(&e.sums))?;
            w.write_tensor(&format!("{name}.counts"), &f32_bytes(&e.counts))?;
        }
        for (t, bytes) in extra {
            w.write_tensor(&t.name, &bytes()?)?;
        }
        w.finish().map(|_| ())
    }
}

/// The bytes of a tensor [`Imatrix::save_with`] adds, produced when it is written.
pub type ExtraTensor = Box<dyn FnOnce() -> Result<Vec<u8>>>;

/// One tensor's line of `--show-statistics` (over its mean squared activations).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorStats {
    pub tensor: String,
    /// The block (usize::MAX for tensors outside the blocks).
    #[serde(skip)]
    pub layer: usize,
    /// `attn_q`, `ffn_down`, ...
    pub kind: String,
    pub total: f32,
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    pub stddev: f32,
    /// Share of channels whose mean square is above 1e-5.
    pub active: f32,
    pub elements: usize,
    pub entropy: f32,
    /// Entropy as a percentage of its maximum (log2 of the channel count).
    pub entropy_norm: f32,
    /// Share of channels more than one standard deviation above the mean.
    pub zd: f32,
    /// Cosine similarity with the same tensor in the previous block.
    pub cos_sim: Option<f32>,
}

fn mean_squares(e: &ImatrixEntry) -> Option<Vec<f32>> {
    let n_mat = e.counts.len();
    if n_mat == 0 || !e.sums.len().is_multiple_of(n_mat) {
        return None;
    }
    let row = e.sums.len() / n_mat;
    let mut out = Vec::with_capacity(e.sums.len());
    for (i, &c) in e.counts.iter().enumerate() {
        if c != 0.0 {
            out.extend(e.sums[i * row..(i + 1) * row].iter().map(|s| s / c));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na * nb)) as f32
    }
}

fn tensor_stats(name: &str, e: &ImatrixEntry) -> Option<TensorStats> {
    let act = mean_squares(e)?;
    let n = act.len() as f32;
    let total: f32 = act.iter().sum();
    let mean = total / n;
    let sq: f32 = act.iter().map(|a| a * a).sum();
    let stddev = ((sq / n) - mean * mean).max(0.0).sqrt();
    let inactive = act.iter().filter(|a| a.abs() <= 1e-5).count() as f32;
    let entropy =
        if total > 0.0 { act.iter().map(|a| a / total).filter(|p| *p > 0.0).map(|p| -p * p.log2()).sum() } else { 0.0 };
    let zd = if stddev > 0.0 { act.iter().filter(|a| (*a - mean) / stddev > 1.0).count() as f32 / n } else { 0.0 };
    let parts: Vec<&str> = name.split('.').collect();
    let layer = crate::util::tensor_name::block_of(name).unwrap_or(usize::MAX);
    let kind = parts.iter().position(|p| *p == "weight").filter(|&i| i > 0).map_or(name, |i| parts[i - 1]).to_string();
    Some(TensorStats {
        tensor: name.to_string(),
        layer,
        kind,
        total,
        min: act.iter().copied().fold(f32::INFINITY, f32::min),
        max: act.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        mean,
        stddev,
        active: 1.0 - inactive / n,
        elements: act.len(),
        entropy,
        entropy_norm: if act.len() > 1 { 100.0 * entropy / n.log2() } else { 0.0 },
        zd,
        cos_sim: None,
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn load_gguf(path: &Path) -> Result<Imatrix> {
    let f = GgufFile::open(path)?;
    let mut m = Imatrix {
        datasets: f
            .get("imatrix.datasets")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        chunk_count: f.get_u64("imatrix.chunk_count").unwrap_or(0) as u32,
        chunk_size: f.get_u64("imatrix.chunk_size").unwrap_or(0) as u32,
        extra: f.metadata.iter().filter(|(k, _)| k.starts_with("microscale.")).cloned().collect(),
        ..Default::default()
    };
    if f.get("imatrix.datasets").is_none()
        || f.get("imatrix.chunk_count").is_none()
        || f.get("imatrix.chunk_size").is_none()
    {
        bail!("missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)");
    }
    let read = |name: &str| -> Result<Vec<f32>> {
        let t = f.tensor(name).ok_or_else(|| anyhow!("no tensor {name}"))?;
        if t.ggml_type != GgmlType::F32 {
            bail!("{name} must be F32");
        }
        crate::quant::dequantize(GgmlType::F32, f.tensor_data(t))
    };
    for t in &f.tensors {
        if let Some(base) = t.name.strip_suffix(".in_sum2") {
            let sums = read(&t.name)?;
            let counts = read(&format!("{base}.counts"))?;
            if counts.is_empty() || sums.len() % counts.len() != 0 {
                bail!("mismatched sums and counts for {base}");
            }
            m.entries.insert(base.to_string(), ImatrixEntry { sums, counts });
        }
    }
    if m.entries.is_empty() {
        bail!("no entries");
    }
    Ok(m)
}

/// The legacy format: i32 count, then per entry (i32 name length, name, i32 ncall, i32 nval,
/// nval f32 sums), then optional i32 chunk count and dataset name.
fn load_legacy(path: &Path) -> Result<Imatrix> {
    let bytes = std::fs::read(path)?;
    let mut pos = 0usize;
    let i32_at = |pos: &mut usize| -> Result<i32> {
        let b = bytes.get(*pos..*pos + 4).ok_or_else(|| anyhow!("truncated at byte {}", *pos))?;
        *pos += 4;
        Ok(i32::from_le_bytes(b.try_into().unwrap()))
    };
    // A length or count read from the file, which must be positive and fit in what is left.
    let take = |pos: &mut usize, n: i32, unit: usize, what: &str| -> Result<std::ops::Range<usize>> {
        let len = usize::try_from(n).ok().and_then(|n| n.checked_mul(unit));
        match len {
            Some(len) if len <= bytes.len() - *pos => {
                let r = *pos..*pos + len;
                *pos += len;
                Ok(r)
            }
            _ => bail!("{what} {n} at byte {} does not fit in the file", *pos - 4),
        }
    };
    let n_entries = i32_at(&mut pos)?;
    if n_entries < 1 || n_entries as usize > bytes.len() / 12 {
        bail!("neither an imatrix GGUF nor a legacy imatrix (bad entry count {n_entries})");
    }
    let mut m = Imatrix::default();
    for _ in 0..n_entries {
        let len = i32_at(&mut pos)?;
        let name = &bytes[take(&mut pos, len, 1, "entry name length")?];
        let name = String::from_utf8(name.to_vec()).map_err(|_| anyhow!("entry name is not UTF-8"))?;
        let ncall = i32_at(&mut pos)?;
        let nval = i32_at(&mut pos)?;
        if nval < 1 {
            bail!("entry {name} has {nval} values");
        }
        if ncall < 0 {
            bail!("entry {name} has a negative call count {ncall}");
        }
        let data = &bytes[take(&mut pos, nval, 4, "value count")?];
        let sums = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        if m.entries.insert(name.clone(), ImatrixEntry { sums, counts: vec![ncall as f32] }).is_some() {
            bail!("entry {name} appears twice");
        }
    }
    if pos + 4 <= bytes.len() {
        m.chunk_count = i32_at(&mut pos)?.max(0) as u32;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_round_trip_and_weights() {
        let mut m = Imatrix {
            datasets: vec!["wiki.valid.tokens".into()],
            chunk_count: 3,
            chunk_size: 512,
            ..Default::default()
        };
        m.entries
            .insert("blk.0.attn_q.weight".into(), ImatrixEntry { sums: vec![3.0, 6.0, 0.0, 9.0], counts: vec![3.0] });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imatrix.gguf");
        m.save(&p).unwrap();
        let mut back = Imatrix::load(&p).unwrap();
        assert_eq!(back.path.take(), Some(p.clone()));
        assert_eq!(back, m);
        assert_eq!(back.weights("blk.0.attn_q.weight", 4).unwrap(), vec![1.0, 2.0, 0.0, 3.0]);
        assert!(back.weights("blk.0.attn_q.weight", 8).is_none());
        back.path = Some(p.clone());
        let e = back.weights_checked("blk.0.attn_q.weight", 8).unwrap_err().to_string();
        assert!(e.contains("imatrix.gguf") && e.contains("blk.0.attn_q.weight") && e.contains("4 values"), "{e}");
        assert_eq!(back.weights_checked("blk.9.attn_q.weight", 8).unwrap(), None);
    }
}
