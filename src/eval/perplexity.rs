//! Perplexity with the semantics of llama.cpp's `llama-perplexity`: the text is tokenized once,
//! cut into windows of `n_ctx` tokens, the first token of each window replaced by BOS when the
//! vocabulary asks for one, and only the second half of each window scored (every scored token
//! sees at least `n_ctx/2` tokens of context).

use crate::engine::Model;
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

#[derive(Clone, Debug)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// Standard error of the perplexity, as llama-perplexity prints after `+/-`.
    pub ppl_stderr: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
    /// Perplexity after each window (the running estimate llama-perplexity prints).
    pub running: Vec<f64>,
}

/// llama.cpp's `log_softmax` for one token: `logit[tok] - max - log(sum(exp(logit - max)))`.
pub fn token_logprob(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (logits[tok] - max) as f64 - sum_exp.ln()
}

pub fn perplexity(model: &Model, text: &str, opts: &PerplexityOptions) -> Result<PerplexityResult> {
    let tokens = model.tokenize(text, true);
    perplexity_of_tokens(model, &tokens, opts)
}

pub fn perplexity_of_tokens(model: &Model, tokens: &[i32], opts: &PerplexityOptions) -> Result<PerplexityResult> {
    let n_ctx = opts.n_ctx;
    let available = tokens.len() / n_ctx;
    if available == 0 {
        bail!("the text has {} tokens; perplexity needs at least {} (2 * ctx-size / 2)", tokens.len(), n_ctx);
    }
    let n_chunks = opts.chunks.map_or(available, |c| c.min(available));
    let mut session = model.session(n_ctx, opts.n_batch.min(n_ctx), opts.threads)?;
    let n_vocab = session.n_vocab();
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    for chunk in 0..n_chunks {
        let mut window = tokens[chunk * n_ctx..(chunk + 1) * n_ctx].to_vec();
        if model.add_bos() {
            window[0] = model.bos();
        }
        let logits = session.logits(&window, first)?;
        // Position first+j predicts window[first+j+1]; the last position predicts nothing.
        let lps: Vec<f64> = (0..n_ctx - 1 - first)
            .into_par_iter()
            .map(|j| -token_logprob(&logits[j * n_vocab..(j + 1) * n_vocab], window[first + j + 1] as usize))
            .collect();
        for v in lps {
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        running.push((nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let ppl_stderr = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    Ok(PerplexityResult { ppl, ppl_stderr, chunks: n_chunks, scored_tokens: count, running })
}
