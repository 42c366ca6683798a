//! KL divergence of a model against a base model on the same tokens, with the statistics llama.cpp's
//! `llama-perplexity --kl-divergence` prints. Both models run in this process, window by window:
//! no multi-gigabyte logits file. As in the tool, the base model's log-probabilities are first
//! stored as 16-bit fixed point over the top 16 nats (`log_softmax` with `uint16_t * log_prob`), so
//! our numbers are the tool's numbers.

use super::perplexity::{split_windows, windows, PerplexityOptions, WindowLogits};
use crate::engine::Model;
use crate::util::progress::Progress;
use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use std::io::{Read, Write};

#[derive(Clone, Debug, serde::Serialize)]
pub struct KldResult {
    pub chunks: usize,
    pub tokens: usize,
    pub ppl: f64,
    pub ppl_stderr: f64,
    pub ppl_base: f64,
    pub ppl_base_stderr: f64,
    pub ln_ppl_ratio: f64,
    pub ln_ppl_ratio_stderr: f64,
    /// PPL(Q)/PPL(base).
    pub ppl_ratio: f64,
    pub ppl_ratio_stderr: f64,
    pub kld_mean: f64,
    pub kld_stderr: f64,
    pub kld_median: f64,
    pub kld_p99: f64,
    pub kld_p999: f64,
    pub kld_max: f64,
    /// Fraction of tokens whose most likely next token is the same in both models.
    pub same_top: f64,
    pub same_top_stderr: f64,
    pub rms_dp: f64,
    pub rms_dp_stderr: f64,
    /// The KL divergence summed over each window's scored tokens, in window order: the blocks of
    /// a bootstrap over windows (`record::items`).
    #[serde(skip)]
    pub window_kld: Vec<f64>,
    /// Scored tokens per window.
    #[serde(skip)]
    pub tokens_per_window: usize,
    /// sha256 of the windows' tokens, as scored (`record::items::tokens_sha256`).
    #[serde(skip)]
    pub tokens_sha256: String,
}

/// Running sums, as llama.cpp's `kl_divergence_result`.
#[derive(Default, Clone, Copy)]
struct Sums {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kld: f64,
    kld2: f64,
    p_diff: f64,
    p_diff2: f64,
    p_diff4: f64,
    same_top: usize,
    count: usize,
}

/// ggml's `nearest_int` (round half to even through a float add).
fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The base model's log-probabilities, 16-bit fixed point: (scale, min_log_prob, values).
struct BaseLogProbs {
    scale: f32,
    min_log_prob: f32,
    q: Vec<u16>,
}

/// llama-perplexity's `log_softmax(n_vocab, logits, uint16_t * log_prob, tok)`.
fn quantize_base(logits: &[f32]) -> BaseLogProbs {
    let max_logit = logits.iter().copied().fold(logits[0], f32::max);
    let min_logit = logits.iter().copied().fold(logits[0], f32::min).max(max_logit - 16.0);
    let sum_exp: f64 = logits.iter().map(|&l| (l - max_logit).exp() as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min_logit - max_logit - log_sum_exp;
    let scale = (max_logit - min_logit) / 65535.0;
    let q = if scale != 0.0 {
        let inv = 1.0 / scale;
        logits.iter().map(|&l| if l > min_logit { nearest_int(inv * (l - min_logit)) as u16 } else { 0 }).collect()
    } else {
        vec![0; logits.len()]
    };
    BaseLogProbs { scale, min_log_prob, q }
}

/// One token's contribution (llama-perplexity's `log_softmax(..., base_log_prob, tok, kld)`);
/// returns the sums and the token's KL divergence.
fn token_stats(logits: &[f32], base: &BaseLogProbs, tok: usize) -> (Sums, f32) {
    let mut s = Sums::default();
    let (mut max_logit, mut imax) = (logits[0], 0);
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max_logit {
            max_logit = l;
            imax = i;
        }
    }
    let sum_exp: f64 = logits.iter().map(|&l| (l - max_logit).exp() as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let nll = max_logit + log_sum_exp - logits[tok];
    s.nll += nll as f64;
    s.nll2 += (nll * nll) as f64;
    let nll_base = -(base.scale * base.q[tok] as f32 + base.min_log_prob);
    s.nll_base += nll_base as f64;
    s.nll_base2 += (nll_base * nll_base) as f64;
    s.nll_nll_base += (nll * nll_base) as f64;
    let max_plus = max_logit + log_sum_exp;
    let mut sum = 0f64;
    let (mut imax_base, mut p_log_base_max) = (0usize, 0f32);
    for (i, &l) in logits.iter().enumerate() {
        let p_log_base = base.scale * base.q[i] as f32 + base.min_log_prob;
        if i == 0 || p_log_base > p_log_base_max {
            p_log_base_max = p_log_base;
            imax_base = i;
        }
        if p_log_base > -16.0 {
            let p_base = p_log_base.exp();
            sum += (p_base * (p_log_base - l + max_plus)) as f64;
        }
    }
    s.kld += sum;
    s.kld2 += sum * sum;
    s.count = 1;
    s.same_top = usize::from(imax == imax_base);
    let p_diff = (-nll).exp() - (-nll_base).exp();
    s.p_diff += p_diff as f64;
    let p_diff2 = (p_diff * p_diff) as f64;
    s.p_diff2 += p_diff2;
    s.p_diff4 += p_diff2 * p_diff2;
    (s, sum as f32)
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.nll += o.nll;
        self.nll2 += o.nll2;
        self.nll_base += o.nll_base;
        self.nll_base2 += o.nll_base2;
        self.nll_nll_base += o.nll_nll_base;
        self.kld += o.kld;
        self.kld2 += o.kld2;
        self.p_diff += o.p_diff;
        self.p_diff2 += o.p_diff2;
        self.p_diff4 += o.p_diff4;
        self.same_top += o.same_top;
        self.count += o.count;
    }
}

fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    (f, if df > 0.0 && count > 10 { (df / (count - 1) as f64).sqrt() } else { 0.0 })
}

fn covariance(a: f64, b: f64, ab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (ab / n - (a / n) * (b / n)) / (n - 1.0)
}

/// llama-perplexity's percentile (linear interpolation over the sorted values).
fn percentile(sorted: &[f32], fraction: f32) -> f64 {
    let p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    let frac = p - ip as f32;
    ((1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]) as f64
}

/// KL divergence of `model` against `base` over the windows of `tokens` (tokenized by the base).
pub fn kl_divergence(
    model: &Model,
    base: &Model,
    tokens: &[i32],
    opts: &PerplexityOptions,
    quiet: bool,
) -> Result<KldResult> {
    if model.n_vocab() != base.n_vocab() {
        bail!(
            "{} and {} have different vocabularies ({} and {} tokens)",
            model.path.display(),
            base.path.display(),
            model.n_vocab(),
            base.n_vocab()
        );
    }
    let wins = windows(base, tokens, opts.n_ctx, opts.chunks)?;
    // One window per decode, as the tool runs --kl-divergence.
    let mut base_eval = WindowLogits::new(base, opts.n_ctx, opts.n_ctx, opts.threads)?;
    let n_vocab = base.n_vocab();
    let mut base_rows = |w: usize| -> Result<Vec<BaseLogProbs>> {
        Ok(scored_log_probs(&base_eval.eval(std::slice::from_ref(&wins[w]))?.remove(0), n_vocab, opts.n_ctx))
    };
    kld_over_windows(model, &wins, opts, &mut base_rows, quiet)
}

/// KL divergence of `model` against base log-probabilities saved by [`save_base_log_probs`] (or
/// by `llama-perplexity --kl-divergence-base`), on the tokens saved with them.
pub fn kl_divergence_from_file(
    model: &Model,
    base: &BaseLogProbsFile,
    opts: &PerplexityOptions,
    quiet: bool,
) -> Result<KldResult> {
    let wins = base_windows(model, base, opts.n_ctx, opts.chunks)?;
    let mut base_rows = |w: usize| Ok(base.window(w));
    kld_over_windows(model, &wins, opts, &mut base_rows, quiet)
}

/// The statistics of `model` against the base rows of each window (`base_rows(window index)`).
fn kld_over_windows(
    model: &Model,
    wins: &[Vec<i32>],
    opts: &PerplexityOptions,
    base_rows: &mut dyn FnMut(usize) -> Result<Vec<BaseLogProbs>>,
    quiet: bool,
) -> Result<KldResult> {
    let mut test_eval = WindowLogits::new(model, opts.n_ctx, opts.n_ctx, opts.threads)?;
    let mut acc = KldWindows::new(model.n_vocab(), opts.n_ctx, wins.len(), quiet);
    for (i, w) in wins.iter().enumerate() {
        let base = base_rows(i)?;
        acc.add(w, &test_eval.eval(std::slice::from_ref(w))?.remove(0), &base);
    }
    Ok(acc.finish(wins))
}

/// The running statistics of a KL divergence, a window at a time.
struct KldWindows {
    n_vocab: usize,
    first: usize,
    sums: Sums,
    klds: Vec<f32>,
    window_kld: Vec<f64>,
    progress: Progress,
}

impl KldWindows {
    fn new(n_vocab: usize, n_ctx: usize, windows: usize, quiet: bool) -> KldWindows {
        KldWindows {
            n_vocab,
            first: n_ctx / 2,
            sums: Sums::default(),
            klds: Vec::new(),
            window_kld: Vec::with_capacity(windows),
            progress: Progress::new(windows as u64, "kl-divergence", quiet),
        }
    }

    /// Window `w`: the tested model's logits of its scored positions against the base's rows.
    fn add(&mut self, w: &[i32], test_logits: &[f32], base: &[BaseLogProbs]) {
        let (n_vocab, first) = (self.n_vocab, self.first);
        let stats: Vec<(Sums, f32)> = base
            .par_iter()
            .enumerate()
            .map(|(j, b)| token_stats(&test_logits[j * n_vocab..(j + 1) * n_vocab], b, w[first + j + 1] as usize))
            .collect();
        let mut in_window = 0f64;
        for (s, k) in stats {
            in_window += s.kld;
            self.sums.add(&s);
            self.klds.push(k);
        }
        self.window_kld.push(in_window);
        self.progress.set_message(&format!("KLD {:.5}", self.sums.kld / self.sums.count as f64));
        self.progress.inc(1);
    }

    fn finish(self, wins: &[Vec<i32>]) -> KldResult {
        self.progress.finish();
        let tokens_per_window = wins.first().map_or(0, |w| w.len() - 1 - self.first);
        KldResult {
            window_kld: self.window_kld,
            tokens_per_window,
            tokens_sha256: crate::record::items::tokens_sha256(wins.iter().map(Vec::as_slice)),
            ..finish(self.sums, self.klds, wins.len())
        }
    }
}

/// KL divergence against a saved base of logits that another runtime computes (a LiteRT file):
/// the windows to run come from the base file; each window's logits, handed to
/// [`KldOfLogits::add`] in order, are scored exactly as llama.cpp's are.
pub struct KldOfLogits<'b> {
    base: &'b BaseLogProbsFile,
    pub windows: Vec<Vec<i32>>,
    acc: KldWindows,
}

impl<'b> KldOfLogits<'b> {
    /// `vocab` lays the windows out (BOS) as llama-perplexity does; `chunks` at most.
    pub fn new(
        vocab: &Model,
        base: &'b BaseLogProbsFile,
        n_ctx: usize,
        chunks: Option<usize>,
        quiet: bool,
    ) -> Result<Self> {
        let windows = base_windows(vocab, base, n_ctx, chunks)?;
        let acc = KldWindows::new(base.n_vocab, n_ctx, windows.len(), quiet);
        Ok(KldOfLogits { base, windows, acc })
    }

    /// Window `i`'s logits of positions `n_ctx/2 ..` (`n_vocab` each).
    pub fn add(&mut self, i: usize, logits: &[f32]) {
        let base = self.base.window(i);
        self.acc.add(&self.windows[i], logits, &base);
    }

    pub fn finish(self) -> KldResult {
        self.acc.finish(&self.windows)
    }
}

/// The windows a saved base holds, at most `chunks` of them (as a text gives at most the windows it
/// holds), laid out for `model`: whole windows however few (llama-perplexity's two-window minimum
/// is for texts). Refused for a model of another vocabulary or windows of another length.
fn base_windows(model: &Model, base: &BaseLogProbsFile, n_ctx: usize, chunks: Option<usize>) -> Result<Vec<Vec<i32>>> {
    check_base_fits(base, model, n_ctx)?;
    let chunks = chunks.map_or(base.n_chunk, |c| c.min(base.n_chunk));
    Ok(split_windows(model, &base.tokens, base.n_ctx, chunks))
}

/// A saved base is compared only with a model of its vocabulary, on windows of its length.
fn check_base_fits(base: &BaseLogProbsFile, model: &Model, n_ctx: usize) -> Result<()> {
    let shown = base.path.display();
    if model.n_vocab() != base.n_vocab {
        bail!(
            "{shown}: saved for a vocabulary of {} tokens, {} has {}",
            base.n_vocab,
            model.path.display(),
            model.n_vocab()
        );
    }
    if n_ctx != base.n_ctx {
        bail!("{shown}: saved with windows of {} tokens, not {n_ctx} (--ctx-size)", base.n_ctx);
    }
    Ok(())
}

/// A window's base log-probabilities for the tokens it scores (each position predicts the next, so
/// the last position of the second half scores nothing), from the logits of that half.
fn scored_log_probs(logits: &[f32], n_vocab: usize, n_ctx: usize) -> Vec<BaseLogProbs> {
    logits.par_chunks(n_vocab).take(n_ctx - 1 - n_ctx / 2).map(quantize_base).collect()
}

/// The magic that starts llama-perplexity's base log-probabilities file.
const LOGITS_MAGIC: &[u8; 8] = b"_logits_";

/// `u16`s per saved token in llama-perplexity's file: scale and minimum as two `f32`s, then the
/// vocabulary's 16-bit log-probabilities padded to an even count.
fn row_u16s(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Save the base model's log-probabilities over the windows of `tokens` in llama-perplexity's
/// `--kl-divergence-base` format (magic, `n_ctx`, `n_vocab`, `n_chunk` as i32, the windows'
/// tokens, then per window and scored token one row of [`row_u16s`]), so that any number of
/// quantized models can later be compared against it without running the base model again.
pub fn save_base_log_probs(
    base: &Model,
    tokens: &[i32],
    opts: &PerplexityOptions,
    out: &std::path::Path,
    quiet: bool,
) -> Result<()> {
    let wins = windows(base, tokens, opts.n_ctx, opts.chunks)?;
    let n_vocab = base.n_vocab();
    let mut file = crate::util::atomic::TempOutput::create(out)?;
    let w = file.writer();
    w.write_all(LOGITS_MAGIC)?;
    for v in [opts.n_ctx, n_vocab, wins.len()] {
        w.write_all(&i32::try_from(v)?.to_le_bytes())?;
    }
    for t in &tokens[..wins.len() * opts.n_ctx] {
        w.write_all(&t.to_le_bytes())?;
    }
    let mut eval = WindowLogits::new(base, opts.n_ctx, opts.n_ctx, opts.threads)?;
    let progress = Progress::new(wins.len() as u64, "base log-probabilities", quiet);
    let mut row = vec![0u8; 2 * row_u16s(n_vocab)];
    for win in &wins {
        for b in &scored_log_probs(&eval.eval(std::slice::from_ref(win))?.remove(0), n_vocab, opts.n_ctx) {
            row[..4].copy_from_slice(&b.scale.to_le_bytes());
            row[4..8].copy_from_slice(&b.min_log_prob.to_le_bytes());
            for (dst, q) in row[8..].chunks_exact_mut(2).zip(&b.q) {
                dst.copy_from_slice(&q.to_le_bytes());
            }
            w.write_all(&row)?;
        }
        progress.inc(1);
    }
    progress.finish();
    file.commit()
}

/// Every saved row's scale and smallest log-probability, checked before any window is compared:
/// the scale of quantized log-probabilities is finite and non-negative, the minimum finite and
/// at most 0 (a NaN there would turn every KL divergence into NaN).
fn check_rows(rows: &[u8], per_row: usize) -> Result<()> {
    for (i, r) in rows.chunks_exact(per_row).enumerate() {
        let scale = f32::from_le_bytes(r[..4].try_into().unwrap());
        let min = f32::from_le_bytes(r[4..8].try_into().unwrap());
        if !(scale.is_finite() && scale >= 0.0 && min.is_finite() && min <= 0.0) {
            bail!("saved row {i} has scale {scale} and minimum log-probability {min} (a damaged file)");
        }
    }
    Ok(())
}

/// A base log-probabilities file, memory-mapped and checked against its own header.
pub struct BaseLogProbsFile {
    pub path: std::path::PathBuf,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<i32>,
    map: memmap2::Mmap,
    rows_at: usize,
}

impl BaseLogProbsFile {
    /// Whether `path` starts like one (as opposed to a GGUF model).
    pub fn is_one(path: &std::path::Path) -> bool {
        let mut magic = [0u8; 8];
        std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == LOGITS_MAGIC
    }

    pub fn open(path: &std::path::Path) -> Result<BaseLogProbsFile> {
        let shown = path.display();
        let f = std::fs::File::open(path).map_err(|e| anyhow!("{shown}: cannot open ({e})"))?;
        // SAFETY: read-only map of a file this process does not modify.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| anyhow!("{shown}: cannot map ({e})"))?;
        if map.len() < 20 || &map[..8] != LOGITS_MAGIC {
            bail!("{shown}: not a base log-probabilities file (no {:?} header)", "_logits_");
        }
        let field = |at: usize| i32::from_le_bytes(map[at..at + 4].try_into().unwrap());
        let (n_ctx, n_vocab, n_chunk) = (field(8), field(12), field(16));
        if n_ctx < 4 || n_vocab < 1 || n_chunk < 1 {
            bail!("{shown}: header says n_ctx {n_ctx}, n_vocab {n_vocab}, {n_chunk} windows");
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let rows_at = n_chunk
            .checked_mul(n_ctx)
            .and_then(|t| t.checked_mul(4))
            .and_then(|b| b.checked_add(20))
            .ok_or_else(|| anyhow!("{shown}: header sizes overflow"))?;
        let expected = (n_ctx - 1 - n_ctx / 2)
            .checked_mul(n_chunk)
            .and_then(|r| r.checked_mul(2 * row_u16s(n_vocab)))
            .and_then(|b| b.checked_add(rows_at))
            .ok_or_else(|| anyhow!("{shown}: header sizes overflow"))?;
        if map.len() != expected {
            bail!(
                "{shown}: {} bytes, but a header of {n_chunk} windows of {n_ctx} tokens over {n_vocab} needs {expected}",
                map.len()
            );
        }
        let tokens: Vec<i32> =
            map[20..rows_at].chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect();
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
            bail!("{shown}: token {t} is outside the vocabulary of {n_vocab}");
        }
        check_rows(&map[rows_at..], 2 * row_u16s(n_vocab)).map_err(|e| anyhow!("{shown}: {e}"))?;
        Ok(BaseLogProbsFile { path: path.to_path_buf(), n_ctx, n_vocab, n_chunk, tokens, map, rows_at })
    }

    /// The saved rows of window `w`.
    fn window(&self, w: usize) -> Vec<BaseLogProbs> {
        let per_row = 2 * row_u16s(self.n_vocab);
        let rows = self.n_ctx - 1 - self.n_ctx / 2;
        let start = self.rows_at + w * rows * per_row;
        self.map[start..start + rows * per_row]
            .par_chunks_exact(per_row)
            .map(|r| BaseLogProbs {
                scale: f32::from_le_bytes(r[..4].try_into().unwrap()),
                min_log_prob: f32::from_le_bytes(r[4..8].try_into().unwrap()),
                q: r[8..8 + 2 * self.n_vocab].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect(),
            })
            .collect()
    }
}

fn finish(s: Sums, mut klds: Vec<f32>, chunks: usize) -> KldResult {
    klds.sort_by(|a, b| a.total_cmp(b));
    let n = s.count;
    let log_ppl = mean_and_uncertainty(s.nll, s.nll2, n);
    let log_ppl_base = mean_and_uncertainty(s.nll_base, s.nll_base2, n);
    let cov = covariance(s.nll, s.nll_base, s.nll_nll_base, n);
    let ln_ratio = log_ppl.0 - log_ppl_base.0;
    let ln_ratio_unc = (log_ppl.1 * log_ppl.1 + log_ppl_base.1 * log_ppl_base.1 - 2.0 * cov).max(0.0).sqrt();
    let kld = mean_and_uncertainty(s.kld, s.kld2, n);
    let mse = mean_and_uncertainty(s.p_diff2, s.p_diff4, n);
    let rms = mse.0.sqrt();
    let same_top = s.same_top as f64 / n as f64;
    let median = if klds.len().is_multiple_of(2) {
        0.5 * (klds[klds.len() / 2] + klds[klds.len() / 2 - 1]) as f64
    } else {
        klds[klds.len() / 2] as f64
    };
    KldResult {
        chunks,
        tokens: n,
        ppl: log_ppl.0.exp(),
        ppl_stderr: log_ppl.0.exp() * log_ppl.1,
        ppl_base: log_ppl_base.0.exp(),
        ppl_base_stderr: log_ppl_base.0.exp() * log_ppl_base.1,
        ln_ppl_ratio: ln_ratio,
        ln_ppl_ratio_stderr: ln_ratio_unc,
        ppl_ratio: ln_ratio.exp(),
        ppl_ratio_stderr: ln_ratio.exp() * ln_ratio_unc,
        kld_mean: kld.0,
        kld_stderr: kld.1,
        kld_median: median,
        kld_p99: percentile(&klds, 0.990),
        kld_p999: percentile(&klds, 0.999),
        kld_max: *klds.last().unwrap_or(&0.0) as f64,
        same_top,
        same_top_stderr: if n > 1 { (same_top * (1.0 - same_top) / (n - 1) as f64).sqrt() } else { 0.0 },
        rms_dp: rms,
        rms_dp_stderr: if rms > 0.0 { 0.5 / rms * mse.1 } else { 0.0 },
        window_kld: vec![],
        tokens_per_window: 0,
        tokens_sha256: String::new(),
    }
}
