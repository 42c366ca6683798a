//! Perplexity with the semantics of llama.cpp's `llama-perplexity`: the text is tokenized once
//! (with BOS when the vocabulary asks for one), cut into windows of `n_ctx` tokens, the first token
//! of each window replaced by BOS when the vocabulary asks for one, and only the second half of each
//! window scored, so every scored token sees at least `n_ctx/2` tokens of context. Like the tool,
//! `n_batch / n_ctx` windows go through llama.cpp in one decode as separate sequences, and the
//! standard error is the tool's (`Final estimate: PPL = … +/- …`).

use crate::engine::{BatchToken, Model, SessionOptions};
use crate::util::progress::Progress;
use anyhow::{bail, Result};
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    pub n_ctx: usize,
    pub n_batch: usize,
    pub threads: usize,
    /// At most this many windows (None: all).
    pub chunks: Option<usize>,
}

impl PerplexityOptions {
    /// llama-perplexity's defaults: 512-token windows, 2048-token batches (4 windows per decode).
    pub fn new(threads: usize, chunks: Option<usize>) -> PerplexityOptions {
        PerplexityOptions { n_ctx: 512, n_batch: 2048, threads, chunks }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// Standard error of the perplexity, as llama-perplexity prints after `+/-`.
    pub ppl_stderr: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
    /// Perplexity after each window (the running estimate llama-perplexity prints).
    pub running: Vec<f64>,
    /// The negative log-likelihood summed over each window's scored tokens, in window order: the
    /// blocks of a paired bootstrap against another model on the same windows (`record::items`).
    #[serde(skip)]
    pub window_nll: Vec<f64>,
    /// Scored tokens per window.
    #[serde(skip)]
    pub tokens_per_window: usize,
    /// sha256 of the windows' tokens, as scored (`record::items::tokens_sha256`).
    #[serde(skip)]
    pub tokens_sha256: String,
}

/// llama.cpp's `log_softmax` for one token: `logit[tok] - max - log(sum(expf(logit - max)))`,
/// with the exponentials in f32 and their sum in f64, as the tool computes it.
pub fn token_logprob(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    (logits[tok] - max) as f64 - sum_exp.ln()
}

pub fn perplexity(model: &Model, text: &str, opts: &PerplexityOptions, quiet: bool) -> Result<PerplexityResult> {
    let tokens = model.tokenize(text, true);
    perplexity_of_tokens(model, &tokens, opts, quiet)
}

/// Windows of `n_ctx` tokens, in order; the first token of each becomes BOS when the model adds one.
pub fn windows(model: &Model, tokens: &[i32], n_ctx: usize, chunks: Option<usize>) -> Result<Vec<Vec<i32>>> {
    // Saturating: a context near usize::MAX must not wrap to a need of 0 tokens.
    let needed = n_ctx.saturating_mul(2);
    if tokens.len() < needed {
        bail!("the text has {} tokens; perplexity with a context of {n_ctx} needs at least {needed}", tokens.len());
    }
    let available = tokens.len() / n_ctx;
    Ok(split_windows(model, tokens, n_ctx, chunks.map_or(available, |c| c.min(available))))
}

/// The first `n` windows of `n_ctx` tokens (`n * n_ctx <= tokens.len()`), BOS first where the
/// vocabulary asks for it, as llama-perplexity lays them out.
pub fn split_windows(model: &Model, tokens: &[i32], n_ctx: usize, n: usize) -> Vec<Vec<i32>> {
    tokens
        .chunks_exact(n_ctx)
        .take(n)
        .map(|w| {
            let mut w = w.to_vec();
            if model.add_bos() {
                w[0] = model.bos();
            }
            w
        })
        .collect()
}

/// Logits of positions `n_ctx/2 ..` of each window, windows decoded `n_batch / n_ctx` at a time.
pub struct WindowLogits<'m> {
    session: crate::engine::Session<'m>,
    n_ctx: usize,
    n_seq: usize,
}

impl<'m> WindowLogits<'m> {
    pub fn new(model: &'m Model, n_ctx: usize, n_batch: usize, threads: usize) -> Result<WindowLogits<'m>> {
        if n_ctx < 4 || n_batch == 0 || threads == 0 {
            bail!("a window of {n_ctx} tokens, a batch of {n_batch} and {threads} threads: each must be positive (windows of at least 4)");
        }
        if n_batch >= n_ctx && !n_batch.is_multiple_of(n_ctx) {
            bail!("--batch-size {n_batch} must be below --ctx-size {n_ctx} or a multiple of it");
        }
        // llama.cpp holds at most LLAMA_MAX_SEQ sequences: short windows fill a batch in several decodes.
        let n_seq = (n_batch / n_ctx).clamp(1, crate::engine::MAX_SEQUENCES);
        let session = model.session_with(&SessionOptions {
            n_ctx: n_seq * n_ctx,
            n_batch: n_batch.min(n_seq * n_ctx),
            threads,
            n_seq,
            unified_kv: false,
            f32_kv: false,
        })?;
        Ok(WindowLogits { session, n_ctx, n_seq })
    }

    pub fn windows_per_decode(&self) -> usize {
        self.n_seq
    }

    pub fn n_vocab(&self) -> usize {
        self.session.n_vocab()
    }

    /// The group's windows as one batch, one sequence each, logits asked for their second halves;
    /// the session is cleared for it.
    fn batch(&mut self, group: &[Vec<i32>]) -> Vec<BatchToken> {
        let first = self.n_ctx / 2;
        self.session.clear();
        let mut batch = Vec::with_capacity(group.len() * self.n_ctx);
        // llama-perplexity lays the windows out position-major within each n_batch piece; one piece
        // holds whole windows here, so sequence-major order is the same batch.
        for (seq, w) in group.iter().enumerate() {
            for (pos, &token) in w.iter().enumerate() {
                batch.push(BatchToken { token, pos, seqs: vec![seq as i32], logits: pos >= first });
            }
        }
        batch
    }

    /// For each window of the group (at most `windows_per_decode`), the logits of its second half.
    pub fn eval(&mut self, group: &[Vec<i32>]) -> Result<Vec<Vec<f32>>> {
        let first = self.n_ctx / 2;
        let batch = self.batch(group);
        let logits = self.session.decode(&batch)?;
        let per_window = (self.n_ctx - first) * self.n_vocab();
        Ok(logits.chunks(per_window).map(|c| c.to_vec()).collect())
    }

    /// `score(window, j, logits)` of every position `first + j` of the second half of each window
    /// of the group, computed in parallel on the logits where llama.cpp holds them (no copy):
    /// `[window][j]`.
    pub fn scores(
        &mut self,
        group: &[Vec<i32>],
        score: impl Fn(usize, usize, &[f32]) -> f64 + Sync,
    ) -> Result<Vec<Vec<f64>>> {
        let per_window = self.n_ctx - self.n_ctx / 2;
        let batch = self.batch(group);
        let mut out = vec![vec![0.0; per_window]; group.len()];
        self.session.decode_with(&batch, |rows| {
            let scored: Vec<(usize, f64)> =
                rows.par_iter().map(|&(k, l)| (k, score(k / per_window, k % per_window, l))).collect();
            for (k, v) in scored {
                out[k / per_window][k % per_window] = v;
            }
            Ok(())
        })?;
        Ok(out)
    }
}

pub fn perplexity_of_tokens(
    model: &Model,
    tokens: &[i32],
    opts: &PerplexityOptions,
    quiet: bool,
) -> Result<PerplexityResult> {
    let windows = windows(model, tokens, opts.n_ctx, opts.chunks)?;
    let mut engine = WindowLogits::new(model, opts.n_ctx, opts.n_batch, opts.threads)?;
    let n_vocab = engine.n_vocab();
    let first = opts.n_ctx / 2;
    let progress = Progress::new(windows.len() as u64, "perplexity", quiet);
    let mut scored_windows = Vec::with_capacity(windows.len());
    let (mut nll, mut count) = (0f64, 0usize);
    for group in windows.chunks(engine.windows_per_decode()) {
        // Position first+j predicts w[first+j+1]; the window's last position predicts nothing.
        let scored = engine.scores(group, |w, j, l| match group[w].get(first + j + 1) {
            Some(&next) => -token_logprob(&l[..n_vocab], next as usize),
            None => 0.0,
        })?;
        for mut v in scored {
            v.truncate(opts.n_ctx - 1 - first);
            nll += v.iter().sum::<f64>();
            count += v.len();
            progress.set_message(&format!("PPL {:.4}", (nll / count as f64).exp()));
            progress.inc(1);
            scored_windows.push(v);
        }
    }
    progress.finish();
    Ok(from_scores(&windows, opts.n_ctx, &scored_windows))
}

/// llama-perplexity's statistics of `windows` (of `n_ctx` tokens) already scored: for each, the
/// negative log-likelihoods of its tokens after the first half, each predicted from the positions
/// before it. Any runtime's scores give numbers comparable with llama.cpp's.
pub fn from_scores(windows: &[Vec<i32>], n_ctx: usize, scored: &[Vec<f64>]) -> PerplexityResult {
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(scored.len());
    let mut window_nll = Vec::with_capacity(scored.len());
    for v in scored {
        window_nll.push(v.iter().sum::<f64>());
        nll += v.iter().sum::<f64>();
        nll2 += v.iter().map(|x| x * x).sum::<f64>();
        count += v.len();
        running.push((nll / count.max(1) as f64).exp());
    }
    let mean = nll / count.max(1) as f64;
    let var = nll2 / count.max(1) as f64 - mean * mean;
    let ppl = mean.exp();
    let ppl_stderr = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    PerplexityResult {
        ppl,
        ppl_stderr,
        chunks: windows.len(),
        scored_tokens: count,
        running,
        window_nll,
        tokens_per_window: n_ctx - 1 - n_ctx / 2,
        tokens_sha256: crate::record::items::tokens_sha256(windows.iter().map(Vec::as_slice)),
    }
}
