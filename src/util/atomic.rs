//! Outputs that appear whole or not at all.
//!
//! Every file microscale writes goes to a hidden temporary file in the target's directory (so the
//! final rename stays on one filesystem and is atomic) and is renamed over the target only when
//! complete. Dropping an uncommitted output deletes the temporary file: an error, a panic or a
//! Ctrl-C unwinding through the writer leaves nothing half-written behind.

use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A suffix no other temporary file of this process (any thread) or of another process shares.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub struct TempOutput {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
    committed: bool,
}

impl TempOutput {
    pub fn create(target: &Path) -> Result<TempOutput> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            bail!("{}: the output directory does not exist", dir.display());
        }
        refuse_non_regular(target)?;
        let name = target
            .file_name()
            .with_context(|| format!("{}: not a file name", target.display()))?
            .to_string_lossy()
            .into_owned();
        let temp = dir.join(format!(".{name}.{}.tmp", unique_suffix()));
        let file = File::create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
        Ok(TempOutput {
            target: target.to_path_buf(),
            temp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            committed: false,
        })
    }

    /// The temporary file's path, for writers that open the file themselves.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Rename a temporary file that another writer filled (through [`Self::path`]) over the target.
    pub fn commit_written(mut self) -> Result<()> {
        drop(self.file.take());
        fs::rename(&self.temp, &self.target)
            .with_context(|| format!("cannot rename {} to {}", self.temp.display(), self.target.display()))?;
        self.committed = true;
        Ok(())
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("writer used after commit")
    }

    /// Flush, fsync and rename over the target.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("committed twice");
        let file = file.into_inner().map_err(|e| e.into_error()).context("flushing output")?;
        file.sync_all().context("syncing output")?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .with_context(|| format!("cannot rename {} to {}", self.temp.display(), self.target.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Write a small file whole (JSON configs and the like) through a temporary file.
pub fn write_file(target: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = TempOutput::create(target)?;
    out.writer().write_all(bytes).with_context(|| format!("writing {}", target.display()))?;
    out.commit()
}

/// Refuse a target that exists and is not a regular file: renaming over a device node or a FIFO
/// would replace it (the commands check this earlier, with [`super::paths::IoPaths`]; this
/// guards every writer).
pub fn refuse_non_regular(target: &Path) -> Result<()> {
    if let Ok(meta) = fs::metadata(target) {
        if !meta.is_file() {
            bail!("{}: exists and is not a regular file; microscale writes regular files only", target.display());
        }
    }
    Ok(())
}

/// Refuse to write `output` over `input`, inside it or around it (the library's own entry points
/// check this; the commands check every flag at once with [`super::paths::IoPaths`]).
pub fn refuse_overwrite(input: &Path, output: &Path) -> Result<()> {
    super::paths::IoPaths::new().input("input", input).output("output", output, super::paths::OutputKind::File).check()
}

/// A directory built under a hidden temporary name and renamed into place when complete.
pub struct TempDir {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl TempDir {
    /// Refuses a target that exists and is not empty: nothing is ever overwritten.
    pub fn create(target: &Path) -> Result<TempDir> {
        if target.exists() {
            let non_empty =
                fs::read_dir(target).with_context(|| format!("{}: cannot read", target.display()))?.next().is_some();
            if non_empty {
                bail!("{}: directory exists and is not empty; choose a new output directory", target.display());
            }
        }
        let name = target
            .file_name()
            .with_context(|| format!("{}: not a directory name", target.display()))?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).with_context(|| format!("{}: cannot create", parent.display()))?;
        let temp = parent.join(format!(".{name}.{}.tmp", unique_suffix()));
        fs::create_dir(&temp).with_context(|| format!("{}: cannot create", temp.display()))?;
        Ok(TempDir { target: target.to_path_buf(), temp, committed: false })
    }

    pub fn path(&self) -> &Path {
        &self.temp
    }

    pub fn commit(mut self) -> Result<()> {
        if self.target.exists() {
            fs::remove_dir(&self.target).with_context(|| format!("{}: cannot replace", self.target.display()))?;
        }
        fs::rename(&self.temp, &self.target)
            .with_context(|| format!("cannot rename {} to {}", self.temp.display(), self.target.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}
