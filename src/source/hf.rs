//! A Hugging Face model directory: `config.json` plus `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Every shard is memory-mapped; nothing is read whole.

use super::{TensorDesc, TensorSource};
use crate::quant::GgmlType;
use crate::util::direct::{DirectBuffer, DirectFile};
use crate::util::mmap::release_pages;
use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Direct reads are on unless `MICROSCALE_DIRECT_IO=0` (for measuring the memory-mapped path).
fn direct_reads_wanted() -> bool {
    std::env::var("MICROSCALE_DIRECT_IO").map_or(true, |v| v != "0")
}

struct Shard {
    path: PathBuf,
    map: Mmap,
    /// The same file opened for reads past the page cache (`None` where refused).
    direct: Option<DirectFile>,
    /// Cleared when the file system accepted `O_DIRECT` at open but refuses it on read.
    direct_works: AtomicBool,
}

struct Location {
    shard: usize,
    start: usize,
    end: usize,
}

pub struct HfCheckpoint {
    pub dir: PathBuf,
    /// `config.json`, parsed.
    pub config: Value,
    shards: Vec<Shard>,
    tensors: Vec<TensorDesc>,
    index: HashMap<String, Location>,
}

impl HfCheckpoint {
    pub fn open(dir: &Path) -> Result<HfCheckpoint> {
        if !dir.is_dir() {
            bail!("{}: not a directory (expected a Hugging Face model directory or a .gguf file)", dir.display());
        }
        let config_path = dir.join("config.json");
        let config = read_json(&config_path).map_err(|e| {
            if config_path.exists() {
                e
            } else {
                anyhow!("{}: no config.json (not a Hugging Face model directory)", dir.display())
            }
        })?;
        let shard_names = shard_file_names(dir)?;
        let mut shards = Vec::new();
        let mut tensors = Vec::new();
        let mut index = HashMap::new();
        for name in &shard_names {
            let path = dir.join(name);
            let file = File::open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
            // SAFETY: read-only map of a file we do not modify.
            let map = unsafe { Mmap::map(&file) }.with_context(|| format!("{}: cannot map", path.display()))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| anyhow!("{}: corrupt safetensors file: {}", path.display(), describe(&e)))?;
            let data_start = 8 + header_len;
            let mut names: Vec<_> = meta.tensors().into_iter().collect();
            names.sort_by_key(|(_, info)| info.data_offsets.0);
            for (tname, info) in names {
                let dtype = match info.dtype {
                    Dtype::F32 => GgmlType::F32,
                    Dtype::F16 => GgmlType::F16,
                    Dtype::BF16 => GgmlType::BF16,
                    other => {
                        // Buffers such as GPT-2's attn.bias are dropped by the architecture anyway;
                        // record other dtypes so the error names the tensor only if it is needed.
                        if is_ignorable_buffer(&tname) {
                            continue;
                        }
                        bail!(
                            "{}: tensor {tname:?} has dtype {other:?}; microscale reads F32, F16 and BF16",
                            path.display()
                        )
                    }
                };
                let shape = info.shape.clone();
                let n_bytes = shape.iter().try_fold(dtype.type_size(), |acc, &d| acc.checked_mul(d));
                let (s, e) = info.data_offsets;
                if e < s || Some(e - s) != n_bytes || shape.contains(&0) {
                    bail!("{}: tensor {tname:?} has {} bytes for shape {shape:?}", path.display(), e - s);
                }
                if index.contains_key(&tname) {
                    bail!("{}: tensor {tname:?} appears in more than one shard", path.display());
                }
                index.insert(
                    tname.clone(),
                    Location { shard: shards.len(), start: data_start + s, end: data_start + e },
                );
                tensors.push(TensorDesc { name: tname, shape, dtype });
            }
            let direct = direct_reads_wanted().then(|| DirectFile::open(&path)).flatten();
            shards.push(Shard { path, map, direct, direct_works: AtomicBool::new(true) });
        }
        check_index_complete(dir, &index)?;
        Ok(HfCheckpoint { dir: dir.to_path_buf(), config, shards, tensors, index })
    }

    /// Read an optional JSON file that sits beside the weights (tokenizer_config.json and the like).
    pub fn side_file(&self, name: &str) -> Result<Option<Value>> {
        let path = self.dir.join(name);
        if path.exists() {
            read_json(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn architecture_name(&self) -> Result<String> {
        let arch = self.config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str());
        arch.map(str::to_string)
            .ok_or_else(|| anyhow!("{}: config.json has no \"architectures\" entry", self.dir.display()))
    }

    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.map.len() as u64).sum()
    }
}

impl TensorSource for HfCheckpoint {
    fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }

    fn raw(&self, name: &str) -> Result<&[u8]> {
        let loc = self.index.get(name).ok_or_else(|| anyhow!("{}: no tensor {name:?}", self.dir.display()))?;
        Ok(&self.shards[loc.shard].map[loc.start..loc.end])
    }

    fn release(&self, name: &str) {
        if let Some(loc) = self.index.get(name) {
            release_pages(&self.shards[loc.shard].map, loc.start, loc.end - loc.start);
        }
    }

    fn release_part(&self, name: &str, part: &[u8]) {
        if let Some(loc) = self.index.get(name) {
            crate::util::mmap::release_slice(&self.shards[loc.shard].map, part);
        }
    }

    fn prefetch(&self, name: &str) {
        if let Some(loc) = self.index.get(name) {
            crate::util::mmap::prefetch_pages(&self.shards[loc.shard].map, loc.start, loc.end - loc.start);
        }
    }

    fn read_direct<'b>(
        &self,
        name: &str,
        range: std::ops::Range<usize>,
        buf: &'b mut DirectBuffer,
    ) -> Option<Result<&'b [u8]>> {
        let loc = self.index.get(name)?;
        let shard = &self.shards[loc.shard];
        let file = shard.direct.as_ref().filter(|_| shard.direct_works.load(Ordering::Relaxed))?;
        if loc.start + range.end > loc.end {
            return Some(Err(anyhow!("{}: bytes {range:?} are outside tensor {name:?}", shard.path.display())));
        }
        match file.read((loc.start + range.start) as u64, range.len(), buf) {
            Ok(bytes) => Some(Ok(bytes)),
            Err(e) if is_einval(&e) => {
                shard.direct_works.store(false, Ordering::Relaxed);
                None // the memory map reads it instead
            }
            Err(e) => Some(Err(e.context(format!("{}: reading tensor {name:?}", shard.path.display())))),
        }
    }

    fn reads_direct(&self, name: &str) -> bool {
        self.index.get(name).is_some_and(|loc| {
            let shard = &self.shards[loc.shard];
            shard.direct.is_some() && shard.direct_works.load(Ordering::Relaxed)
        })
    }

    fn location(&self, name: &str) -> String {
        match self.index.get(name) {
            Some(loc) => self.shards[loc.shard].path.display().to_string(),
            None => self.dir.display().to_string(),
        }
    }
}

fn is_ignorable_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name.ends_with("rotary_emb.inv_freq")
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: invalid JSON: {e}", path.display()))
}

/// The safetensors files of a directory: the shards named by the index, else `model.safetensors`.
fn shard_file_names(dir: &Path) -> Result<Vec<String>> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.exists() {
        let index = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| anyhow!("{}: no \"weight_map\" object", index_path.display()))?;
        let files: BTreeSet<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
        for f in &files {
            if !dir.join(f).exists() {
                bail!("{}: shard {f} listed in the index is missing", dir.display());
            }
        }
        return Ok(files.into_iter().collect());
    }
    if dir.join("model.safetensors").exists() {
        return Ok(vec!["model.safetensors".into()]);
    }
    if dir.join("pytorch_model.bin").exists() {
        bail!("{}: only pytorch_model.bin found; microscale reads safetensors (convert the checkpoint with `safetensors` first)", dir.display());
    }
    bail!("{}: no model.safetensors or model.safetensors.index.json", dir.display())
}

/// Every tensor the index promises must be in the shards.
fn check_index_complete(dir: &Path, index: &HashMap<String, Location>) -> Result<()> {
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.exists() {
        return Ok(());
    }
    let json = read_json(&index_path)?;
    if let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) {
        for (name, file) in map {
            if !index.contains_key(name) && !is_ignorable_buffer(name) {
                bail!(
                    "{}: tensor {name:?} listed in the index is not in {}",
                    dir.display(),
                    file.as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}

fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => "the data section does not match the header (truncated file?)".into(),
        E::InvalidOffset(name) => format!("the header's offsets for tensor {name:?} are wrong"),
        E::HeaderTooSmall => "file too short for a header".into(),
        E::InvalidHeaderLength => "header length runs past the end of the file (truncated file?)".into(),
        other => other.to_string(),
    }
}

/// A file system that takes `O_DIRECT` at open but not on read says EINVAL.
fn is_einval(e: &anyhow::Error) -> bool {
    e.root_cause().downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) == Some(libc::EINVAL)
}
