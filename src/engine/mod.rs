//! The llama.cpp engine, through `llama-cpp-2`: loading GGUF models, tokenizing, and evaluating
//! token sequences to logits. Everything that runs a model goes through here.
//!
//! llama.cpp logs to stderr by default; [`init`] takes its log over ([`log`]): kept quiet unless
//! asked to be verbose, so that microscale's own output stays readable, and remembered, so that a
//! failure quotes llama.cpp's own reason. [`info`] reports what llama.cpp was built with,
//! [`quantize`] runs llama.cpp's own quantizer, [`raw`] observes graph evaluation (calibration),
//! [`user_model`] builds a model from metadata and tensor data without a file, [`generate`] samples
//! text and keeps a chat conversation in the KV cache.
//!
//! Uses `gguf`, `quant`, `util`.

pub mod generate;
pub mod info;
pub mod litert;
pub mod log;
pub mod python_env;
pub mod quantize;
pub mod raw;
pub mod user_model;

use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
static VERBOSE: OnceLock<bool> = OnceLock::new();

/// Initialise llama.cpp once per process. `verbose` keeps llama.cpp's own log on stderr.
pub fn init(verbose: bool) -> &'static LlamaBackend {
    let verbose = *VERBOSE.get_or_init(|| verbose);
    BACKEND.get_or_init(|| {
        if verbose {
            log::set_mode(log::LogMode::Verbose);
        }
        log::install();
        LlamaBackend::init().expect("llama.cpp backend initialised once")
    })
}

/// llama.cpp ran out of memory (an allocation failed, or the address space cap was reached): the
/// model does not fit, which is not the same as a bad file.
#[derive(Debug)]
pub struct OutOfMemory(pub String);

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "out of memory: {}", self.0)
    }
}

impl std::error::Error for OutOfMemory {}

/// The error for a failed llama.cpp call on `path`, quoting llama.cpp's own last error line, and
/// typed [`OutOfMemory`] when that line says memory ran out.
pub fn engine_error(path: &Path, what: &str) -> anyhow::Error {
    match log::last_error() {
        Some(line) if log::says_out_of_memory(&line) => {
            anyhow::Error::new(OutOfMemory(format!("{}: {what}: {line}", path.display())))
        }
        Some(line) => anyhow!("{}: {what}: {line}", path.display()),
        None => anyhow!("{}: {what} (run with -v for llama.cpp's log)", path.display()),
    }
}

/// The pinned engine crate (Cargo.toml pins it exactly; a test keeps the two in step).
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";
/// The pinned safe wrapper crate.
pub const LLAMA_CPP_2_VERSION: &str = "0.1.160";

/// The engine's version for result rows.
pub fn llama_cpp_version() -> String {
    format!("llama-cpp-sys-2 {LLAMA_CPP_SYS_VERSION}")
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_THREADS)
}

/// A model loaded by llama.cpp.
pub struct Model {
    pub path: PathBuf,
    pub inner: LlamaModel,
}

/// How a model is loaded: memory-mapped or read into RAM, and how many of its layers go to the GPU.
/// Every command that loads a model for running it (eval, bench, sweep, generate) builds llama.cpp's
/// parameters here, so `--gpu-layers` means the same everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Memory-map the file (llama.cpp's default); `false` reads it into RAM.
    pub mmap: bool,
    /// Layers offloaded to the GPU (llama.cpp's `n_gpu_layers`; `-ngl`). 0 keeps everything on
    /// the CPU, which is also all a build without a GPU backend (no `cuda` feature) can do.
    pub gpu_layers: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { mmap: true, gpu_layers: 0 }
    }
}

impl LoadOptions {
    /// llama.cpp's model parameters for these options. `n_gpu_layers` is always set: llama.cpp's
    /// own default (-1 since 2025: all layers) would offload everything on a GPU build.
    pub fn model_params(&self) -> LlamaModelParams {
        LlamaModelParams::default().with_use_mmap(self.mmap).with_n_gpu_layers(self.gpu_layers)
    }
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        Model::load_with(path, &LoadOptions::default())
    }

    /// Load with [`LoadOptions`]: memory-mapped (llama.cpp's default) or read into RAM, with
    /// `gpu_layers` layers offloaded.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Model> {
        if !path.is_file() {
            bail!("{}: no such model file", path.display());
        }
        let backend = init(false);
        let params = opts.model_params();
        log::clear();
        let inner = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|_| engine_error(path, "llama.cpp could not load the model"))?;
        Ok(Model { path: path.to_path_buf(), inner })
    }

    /// Load only the vocabulary (a GGUF with tokenizer metadata and no weights loads too, as
    /// llama.cpp's own `models/ggml-vocab-*.gguf` files).
    pub fn load_vocab_only(path: &Path) -> Result<Model> {
        if !path.is_file() {
            bail!("{}: no such model file", path.display());
        }
        let params = LlamaModelParams::default().with_vocab_only(true);
        log::clear();
        let inner = LlamaModel::load_from_file(init(false), path, &params)
            .map_err(|_| engine_error(path, "llama.cpp could not load the vocabulary"))?;
        Ok(Model { path: path.to_path_buf(), inner })
    }

    pub fn n_vocab(&self) -> usize {
        self.inner.n_vocab() as usize
    }

    /// The positions the model can address at all: GPT-2's learned position embeddings end at its
    /// training context (llama.cpp aborts past it); RoPE models have no such limit (None).
    pub fn max_positions(&self) -> Option<usize> {
        (self.meta("general.architecture").as_deref() == Some("gpt2")).then(|| self.inner.n_ctx_train() as usize)
    }

    /// Does the vocabulary ask for a BOS token at the start of a sequence?
    pub fn add_bos(&self) -> bool {
        self.inner.vocab().should_add_bos()
    }

    pub fn bos(&self) -> i32 {
        self.inner.vocab().bos().0
    }

    /// Tokenize as llama.cpp's tools do (`common_tokenize(ctx, text, add_special, parse_special=false)`).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<i32> {
        self.inner.vocab().tokenize(text.as_bytes(), add_special, false).into_iter().map(|t| t.0).collect()
    }

    pub fn meta(&self, key: &str) -> Option<String> {
        self.inner.meta_val_str(key).ok()
    }

    /// A context of `n_ctx` tokens, `n_batch` tokens per decode, on `threads` threads.
    pub fn session(&self, n_ctx: usize, n_batch: usize, threads: usize) -> Result<Session<'_>> {
        self.session_with(&SessionOptions { n_ctx, n_batch, threads, n_seq: 1, unified_kv: false, f32_kv: false })
    }

    /// A single-sequence context at full precision (F32 KV cache, no flash attention), for
    /// comparing logits with a reference implementation.
    pub fn session_f32(&self, n_ctx: usize, threads: usize) -> Result<Session<'_>> {
        self.session_with(&SessionOptions { n_ctx, n_batch: n_ctx, threads, n_seq: 1, unified_kv: false, f32_kv: true })
    }

    /// A context for several sequences at once (`n_seq`); `unified_kv` lets sequences share cells,
    /// which a prefix shared by several sequences (multiple-choice scoring) needs.
    pub fn session_with(&self, o: &SessionOptions) -> Result<Session<'_>> {
        let backend = init(false);
        self.check_session(o)?;
        // Learned absolute positions (GPT-2) end at the training context: llama.cpp would abort.
        let per_seq = if o.unified_kv { o.n_ctx } else { o.n_ctx / o.n_seq.max(1) };
        if let Some(limit) = self.max_positions().filter(|&l| per_seq > l) {
            bail!(
                "{}: GPT-2 has learned positions for {limit} tokens; use a context of at most that (--ctx-size)",
                self.path.display()
            );
        }
        let (n_ctx, n_batch, threads) = (o.n_ctx, o.n_batch, o.threads);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx as u32))
            .with_n_batch(n_batch as u32)
            .with_n_ubatch(n_batch.min(512) as u32)
            .with_n_seq_max(o.n_seq as u32)
            .with_kv_unified(o.unified_kv)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32);
        let params = if o.f32_kv {
            // F32 cache, and no flash attention (its CPU kernel rounds Q·K through F16).
            params
                .with_type_k(llama_cpp_2::context::params::KvCacheType::F32)
                .with_type_v(llama_cpp_2::context::params::KvCacheType::F32)
                .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED)
        } else {
            params
        };
        log::clear();
        let ctx = self
            .inner
            .new_context(backend, params)
            .map_err(|_| engine_error(&self.path, &format!("cannot create a llama.cpp context of {n_ctx} tokens")))?;
        Ok(Session { ctx, n_batch, n_vocab: self.n_vocab() })
    }
}

impl Model {
    /// Refuse a session llama.cpp cannot hold: counts past what its C types and ggml's thread pool
    /// take (they would wrap or overrun, and end in a crash), and a context whose KV cache and
    /// logits alone exceed the memory this machine has free (an out-of-memory error, not a kill).
    fn check_session(&self, o: &SessionOptions) -> Result<()> {
        let shown = self.path.display();
        check_threads(o.threads)?;
        if o.n_ctx == 0 || o.n_ctx > MAX_CONTEXT {
            bail!("{shown}: a context of {} tokens is outside 1..={MAX_CONTEXT} (--ctx-size)", o.n_ctx);
        }
        if o.n_batch == 0 || o.n_batch > MAX_CONTEXT || o.n_seq == 0 || o.n_seq > MAX_SEQUENCES {
            bail!(
                "{shown}: a batch of {} tokens over {} sequences is outside llama.cpp's limits (1..={MAX_CONTEXT} tokens, 1..={MAX_SEQUENCES} sequences)",
                o.n_batch,
                o.n_seq
            );
        }
        let needed = self.session_bytes(o);
        if let Some(free) = crate::util::mem::available_bytes().filter(|&free| needed > free) {
            return Err(anyhow::Error::new(OutOfMemory(format!(
                "{shown}: a context of {} tokens (batch {}) needs {} for its KV cache and logits; this machine has {} free",
                o.n_ctx,
                o.n_batch,
                crate::util::mem::format_size(needed),
                crate::util::mem::format_size(free)
            ))));
        }
        Ok(())
    }

    /// The KV cache (F16, or F32) and the logits buffer of a session: what grows with its sizes.
    fn session_bytes(&self, o: &SessionOptions) -> u64 {
        let m = &self.inner;
        let head_dim = (m.n_embd().max(0) as u64) / u64::from(m.n_head().max(1));
        let kv_width = head_dim * u64::from(m.n_head_kv().max(1));
        let per_value = if o.f32_kv { 4 } else { 2 };
        let kv = (o.n_ctx as u64).saturating_mul(u64::from(m.n_layer()) * 2 * kv_width * per_value);
        let logits = (o.n_batch as u64).saturating_mul(self.n_vocab() as u64 * 4);
        kv.saturating_add(logits)
    }
}

/// ggml's `GGML_MAX_N_THREADS`: its thread pool holds this many threads; more overrun it.
pub const MAX_THREADS: usize = 512;
/// The largest context microscale asks llama.cpp for (llama.cpp counts positions in 32 bits;
/// 2^24 tokens is 16 times the longest trained context of the models microscale targets).
pub const MAX_CONTEXT: usize = 1 << 24;
/// llama.cpp's `LLAMA_MAX_SEQ`.
pub const MAX_SEQUENCES: usize = 256;

/// Refuse a thread count ggml cannot run.
pub fn check_threads(threads: usize) -> Result<()> {
    if threads == 0 || threads > MAX_THREADS {
        bail!("{threads} threads: llama.cpp runs 1 to {MAX_THREADS} (--threads)");
    }
    Ok(())
}

/// How to build a [`Session`].
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub n_ctx: usize,
    pub n_batch: usize,
    pub threads: usize,
    pub n_seq: usize,
    pub unified_kv: bool,
    /// Full precision: F32 keys and values in the KV cache, flash attention off.
    pub f32_kv: bool,
}

/// One token of a hand-built batch: its position, the sequences it belongs to, and whether its
/// logits are wanted.
#[derive(Clone, Debug)]
pub struct BatchToken {
    pub token: i32,
    pub pos: usize,
    pub seqs: Vec<i32>,
    pub logits: bool,
}

/// One llama.cpp context: a KV cache and the logits of the last decode.
pub struct Session<'m> {
    pub ctx: LlamaContext<'m>,
    n_batch: usize,
    n_vocab: usize,
}

impl Session<'_> {
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Forget everything in the KV cache.
    pub fn clear(&mut self) {
        self.ctx.clear_kv_cache();
    }

    /// Decode hand-built tokens (in `n_batch` pieces) and return the logits of the flagged ones,
    /// in order, `n_vocab` values each.
    pub fn decode(&mut self, tokens: &[BatchToken]) -> Result<Vec<f32>> {
        let n_out = tokens.iter().filter(|t| t.logits).count();
        let mut out = Vec::with_capacity(n_out * self.n_vocab);
        self.decode_with(tokens, |rows| {
            for (_, logits) in rows {
                out.extend_from_slice(logits);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Self::decode`] without copying the logits: after each `n_batch` piece, `each_piece` gets
    /// the flagged tokens' logits where llama.cpp holds them, with each one's index among all
    /// flagged tokens (a perplexity batch's logits are 200 MB at a 49k vocabulary: read in place).
    pub fn decode_with(
        &mut self,
        tokens: &[BatchToken],
        mut each_piece: impl FnMut(&[(usize, &[f32])]) -> Result<()>,
    ) -> Result<()> {
        let max_seqs = tokens.iter().map(|t| t.seqs.len()).max().unwrap_or(1);
        let mut batch = LlamaBatch::new(self.n_batch, max_seqs as i32);
        let mut flagged = 0;
        for piece in tokens.chunks(self.n_batch) {
            batch.clear();
            for t in piece {
                batch.add(LlamaToken(t.token), t.pos as i32, &t.seqs, t.logits)?;
            }
            self.ctx.decode(&mut batch).context("llama.cpp decode failed")?;
            let rows: Vec<(usize, &[f32])> = piece
                .iter()
                .enumerate()
                .filter(|(_, t)| t.logits)
                .enumerate()
                .map(|(k, (i, _))| (flagged + k, self.ctx.get_logits_ith(i as i32)))
                .collect();
            flagged += rows.len();
            each_piece(&rows)?;
        }
        Ok(())
    }

    /// Evaluate `tokens` as one fresh sequence (positions 0..n) and return the logits of the
    /// positions `from..n`, row after row (`(n - from) * n_vocab` values).
    pub fn logits(&mut self, tokens: &[i32], from: usize) -> Result<Vec<f32>> {
        self.ctx.clear_kv_cache();
        let mut out = Vec::with_capacity(tokens.len().saturating_sub(from) * self.n_vocab);
        let mut batch = LlamaBatch::new(self.n_batch, 1);
        for (chunk_idx, chunk) in tokens.chunks(self.n_batch).enumerate() {
            batch.clear();
            let base = chunk_idx * self.n_batch;
            for (i, &tok) in chunk.iter().enumerate() {
                let pos = base + i;
                batch.add(LlamaToken(tok), pos as i32, &[0], pos >= from)?;
            }
            self.ctx.decode(&mut batch).context("llama.cpp decode failed")?;
            for (i, _) in chunk.iter().enumerate() {
                if base + i >= from {
                    out.extend_from_slice(self.ctx.get_logits_ith(i as i32));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::LoadOptions;

    #[test]
    fn gpu_layers_reach_llama_cpp_model_params() {
        // What llama.cpp's loader reads: the C struct's n_gpu_layers and use_mmap.
        let p = LoadOptions { mmap: false, gpu_layers: 33 }.model_params();
        assert_eq!(p.n_gpu_layers(), 33);
        assert!(!p.use_mmap());
        let p = LoadOptions::default().model_params();
        assert_eq!(p.n_gpu_layers(), 0, "CPU only unless asked, even on a GPU build");
        assert!(p.use_mmap());
    }

    #[test]
    fn version_constant_matches_the_pin() {
        let manifest = include_str!("../../Cargo.toml");
        assert!(manifest.contains(&format!("llama-cpp-sys-2 = {{ version = \"={}\"", super::LLAMA_CPP_SYS_VERSION)));
        assert!(manifest.contains(&format!("llama-cpp-2 = {{ version = \"={}\"", super::LLAMA_CPP_2_VERSION)));
    }
}
