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
        let mut magic = [0u8; 4];
        let n = std::io::Read::read(
            &mut std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?,
            &mut magic,
        )?;
        let m = if n == 4 && &magic == b"GGUF" { load_gguf(path) } else { load_legacy(path) };
        let mut m = m.map_err(|e| anyhow!("{}: not a usable imatrix: {e:#}", path.display()))?;
        m.path = Some(path.to_path_buf());
        Ok(m)
    }

    /// Write in llama.cpp's imatrix GGUF format.
    pub fn save(&self, path: &Path) -> Result<()> {
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
        let mut w = GgufWriter::create(path, &meta, headers)?;
        for (name, e) in &self.entries {
            w.write_tensor(&format!("{name}.in_sum2"), &f32_bytes(&e.sums))?;
            w.write_tensor(&format!("{name}.counts"), &f32_bytes(&e.counts))?;
        }
        w.finish().map(|_| ())
    }
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
