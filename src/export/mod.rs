//! Export to phones' own runtimes, with the vendors' converters: LiteRT (the former TensorFlow
//! Lite; Android's on-device stack) through `litert-torch`, Core ML (iOS) through `coremltools`.
//! The weights the converters read are microscale's: a GGUF is dequantized to a Hugging Face
//! directory first (`convert::import`), so pruned or quantized files microscale wrote export like
//! a checkpoint. The converters run in the export environment ([`crate::engine::python_env`]).

pub mod coreml;
pub mod litert;

use crate::gguf::GgufFile;
use crate::util::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Refuse, before any work, what the exports do not build (all but the LLaMA family); the GGUF,
/// opened, when `model` is one.
fn check_architecture(model: &Path) -> Result<Option<GgufFile>> {
    let gguf = if model.is_file() { Some(GgufFile::open(model)?) } else { None };
    let arch = if let Some(file) = &gguf {
        file.architecture()?.to_string()
    } else {
        let config = model.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| anyhow!("{}: cannot read ({e})", config.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", config.display()))?;
        v["model_type"].as_str().unwrap_or("").to_string()
    };
    if arch != "llama" {
        bail!("{}: architecture {arch:?}: the export builds the LLaMA family only", model.display());
    }
    Ok(gguf)
}

/// Run a converter script on `checkpoint`, writing `part`, with its own `flags`; its stderr is
/// kept in the scratch directory, its last line the error when it fails. Its stdout.
fn run_converter(
    env: &crate::engine::python_env::PythonEnv,
    what: &str,
    script: &str,
    (checkpoint, part): (&Path, &Path),
    flags: &[(&str, String)],
    stdin: &[u8],
    work: &ScratchDir,
) -> Result<Vec<u8>> {
    let mut args: Vec<std::ffi::OsString> = vec!["--checkpoint".into(), checkpoint.into(), "--out".into(), part.into()];
    for (flag, value) in flags {
        args.extend([(*flag).into(), value.into()]);
    }
    let arg_refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    env.run(what, script, &arg_refs, stdin, Some(&work.0.join("converter.log")))
}

/// The Hugging Face directory the converters read: `model` itself, or a GGUF dequantized into
/// `work`.
fn checkpoint_of(model: &Path, work: &ScratchDir, progress: &Progress) -> Result<PathBuf> {
    if !model.is_file() {
        return Ok(model.to_path_buf());
    }
    progress.set_message("writing the weights as a Hugging Face checkpoint (dequantized)");
    let dir = work.0.join("checkpoint");
    crate::convert::import::import(model, &dir, crate::convert::OutType::F32, true)?;
    Ok(dir)
}

/// A scratch directory beside `out` (the same file system, so the result is renamed into place),
/// removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn beside(out: &Path) -> Result<ScratchDir> {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = parent.join(format!(".{name}.{}.tmp", crate::util::atomic::unique_suffix()));
        std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
