//! Multiple-choice scoring by log-likelihood, as llama.cpp's hellaswag / multiple-choice scorers do
//! it: all choices of an item go through llama.cpp in one batch, the context evaluated once and
//! shared by every choice's sequence (several sequence ids on the prefix tokens), and several items
//! packed into one decode.
//!
//! Metrics follow lm-evaluation-harness: `acc` picks the choice with the highest summed
//! log-probability of its continuation tokens, `acc_norm` the highest per character of continuation.

use super::data::McItem;
use super::perplexity::token_logprob;
use crate::engine::{BatchToken, Model, SessionOptions};
use crate::util::progress::Progress;
use anyhow::{bail, Result};
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct ChoiceOptions {
    /// KV cache size: the tokens of all items packed into one decode.
    pub n_ctx: usize,
    pub n_batch: usize,
    pub threads: usize,
    /// Sequences per decode (choices of all packed items).
    pub max_seqs: usize,
}

impl ChoiceOptions {
    pub fn new(threads: usize) -> ChoiceOptions {
        ChoiceOptions { n_ctx: 2048, n_batch: 512, threads, max_seqs: 32 }
    }
}

/// One item's outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ItemScore {
    pub label: usize,
    /// Summed log-probability of each choice's continuation.
    pub loglik: Vec<f64>,
    /// Characters of each continuation (the acc_norm denominator).
    pub chars: Vec<usize>,
    pub pred: usize,
    pub pred_norm: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ChoiceResult {
    pub acc: f64,
    pub acc_stderr: f64,
    pub acc_norm: f64,
    pub acc_norm_stderr: f64,
    pub items: usize,
    /// Accuracy of always picking at random, for reference.
    pub chance: f64,
    #[serde(skip)]
    pub scores: Vec<ItemScore>,
    pub tokens: usize,
    /// sha256 of the items (contexts, choices, labels), to pair two models' `scores` only on the
    /// same items (`record::items`).
    #[serde(skip)]
    pub items_sha256: String,
}

impl ChoiceResult {
    /// `1`/`0` per item: whether `acc` (or `acc_norm` when `norm`) picked the right choice.
    pub fn correct(&self, norm: bool) -> String {
        let pick = |s: &ItemScore| if norm { s.pred_norm } else { s.pred };
        self.scores.iter().map(|s| if pick(s) == s.label { '1' } else { '0' }).collect()
    }
}

/// The identity of a list of items: every context, choice and label, in order.
pub fn items_sha256(items: &[McItem]) -> String {
    let labels: Vec<String> = items.iter().map(|it| it.label.to_string()).collect();
    let parts = items.iter().zip(&labels).flat_map(|(it, label)| {
        std::iter::once(it.context.as_str()).chain(it.choices.iter().map(String::as_str)).chain([label.as_str(), ""])
    });
    crate::record::items::strings_sha256(parts)
}

/// An item tokenized: the shared context, and each choice's continuation tokens.
struct Prepared {
    context: Vec<i32>,
    continuations: Vec<Vec<i32>>,
}

impl Prepared {
    fn tokens(&self) -> usize {
        self.context.len() + self.continuations.iter().map(Vec::len).sum::<usize>()
    }
}

fn prepare(model: &Model, item: &McItem, index: usize) -> Result<Prepared> {
    let context = model.tokenize(&item.context, true);
    if context.is_empty() {
        bail!("item {index}: the context tokenizes to nothing");
    }
    let mut continuations = Vec::with_capacity(item.choices.len());
    for choice in &item.choices {
        // Tokenize context and continuation together (as they would be read), and keep what follows
        // the context's tokens; when the boundary merges into one token, tokenize the choice alone.
        let full = model.tokenize(&format!("{}{choice}", item.context), true);
        let cont = if full.len() > context.len() && full[..context.len()] == context[..] {
            full[context.len()..].to_vec()
        } else {
            model.tokenize(choice, false)
        };
        if cont.is_empty() {
            bail!("item {index}: choice {choice:?} tokenizes to nothing");
        }
        continuations.push(cont);
    }
    Ok(Prepared { context, continuations })
}

pub fn score_items(
    model: &Model,
    items: &[McItem],
    opts: &ChoiceOptions,
    what: &str,
    quiet: bool,
) -> Result<ChoiceResult> {
    let prepared: Vec<Prepared> =
        items.iter().enumerate().map(|(i, it)| prepare(model, it, i)).collect::<Result<_>>()?;
    // GPT-2's positions end at 1024: a smaller cache, fewer items per decode (each item's
    // positions start at 0, so any item that fits the cache fits the positions too).
    let opts =
        &ChoiceOptions { n_ctx: model.max_positions().map_or(opts.n_ctx, |p| p.min(opts.n_ctx)), ..opts.clone() };
    let mut session = model.session_with(&SessionOptions {
        n_ctx: opts.n_ctx,
        n_batch: opts.n_batch,
        threads: opts.threads,
        n_seq: opts.max_seqs,
        unified_kv: true,
        f32_kv: false,
    })?;
    let n_vocab = session.n_vocab();
    let progress = Progress::new(items.len() as u64, what, quiet);
    let mut scores = Vec::with_capacity(items.len());
    let mut tokens_total = 0;
    let mut i0 = 0;
    while i0 < prepared.len() {
        // Pack items [i0, i1) into one decode.
        let (mut i1, mut n_tok, mut n_seq) = (i0, 0, 0);
        while i1 < prepared.len() {
            let p = &prepared[i1];
            if p.continuations.len() > opts.max_seqs || p.tokens() > opts.n_ctx {
                bail!(
                    "item {i1} needs {} tokens and {} sequences; the context holds {} and {}",
                    p.tokens(),
                    p.continuations.len(),
                    opts.n_ctx,
                    opts.max_seqs
                );
            }
            if n_tok + p.tokens() > opts.n_ctx || n_seq + p.continuations.len() > opts.max_seqs {
                break;
            }
            n_tok += p.tokens();
            n_seq += p.continuations.len();
            i1 += 1;
        }
        let (batch, targets) = pack(&prepared[i0..i1]);
        session.clear();
        let logits = session.decode(&batch)?;
        tokens_total += batch.len();
        // targets[k] = (logit row, token) for every continuation token, item by item, choice by choice.
        let lps: Vec<f64> = targets
            .par_iter()
            .map(|&(row, tok)| token_logprob(&logits[row * n_vocab..(row + 1) * n_vocab], tok as usize))
            .collect();
        let mut k = 0;
        for (item, p) in items[i0..i1].iter().zip(&prepared[i0..i1]) {
            let loglik: Vec<f64> = p
                .continuations
                .iter()
                .map(|c| {
                    let s = lps[k..k + c.len()].iter().sum();
                    k += c.len();
                    s
                })
                .collect();
            scores.push(item_score(item, loglik));
            progress.inc(1);
        }
        i0 = i1;
    }
    progress.finish();
    Ok(ChoiceResult { items_sha256: items_sha256(items), ..summarize(scores, tokens_total) })
}

/// The batch for a group of items, and for each continuation token the row of the logits that
/// predict it.
fn pack(group: &[Prepared]) -> (Vec<BatchToken>, Vec<(usize, i32)>) {
    let mut batch = Vec::new();
    let mut targets = Vec::new();
    let mut row = 0; // index among the tokens whose logits are returned
    let mut s0 = 0i32;
    for p in group {
        let seqs: Vec<i32> = (0..p.continuations.len() as i32).map(|j| s0 + j).collect();
        let n_ctx = p.context.len();
        for (pos, &token) in p.context.iter().enumerate() {
            batch.push(BatchToken { token, pos, seqs: seqs.clone(), logits: pos + 1 == n_ctx });
        }
        let ctx_row = row;
        row += 1;
        for (j, cont) in p.continuations.iter().enumerate() {
            for (i, &token) in cont.iter().enumerate() {
                // The first continuation token is predicted by the context's last position.
                targets.push((if i == 0 { ctx_row } else { row - 1 }, token));
                let wants = i + 1 < cont.len();
                batch.push(BatchToken { token, pos: n_ctx + i, seqs: vec![s0 + j as i32], logits: wants });
                if wants {
                    row += 1;
                }
            }
        }
        s0 += p.continuations.len() as i32;
    }
    (batch, targets)
}

fn argmax(v: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in v.enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

fn item_score(item: &McItem, loglik: Vec<f64>) -> ItemScore {
    let chars: Vec<usize> = item.choices.iter().map(|c| c.chars().count()).collect();
    let pred = argmax(loglik.iter().copied());
    let pred_norm = argmax(loglik.iter().zip(&chars).map(|(l, &c)| l / c as f64));
    ItemScore { label: item.label, loglik, chars, pred, pred_norm }
}

/// Mean and the standard error of a proportion over `n` items: sqrt(p(1-p)/(n-1)).
pub fn proportion(hits: usize, n: usize) -> (f64, f64) {
    let p = hits as f64 / n.max(1) as f64;
    let se = if n > 1 { (p * (1.0 - p) / (n - 1) as f64).sqrt() } else { 0.0 };
    (p, se)
}

fn summarize(scores: Vec<ItemScore>, tokens: usize) -> ChoiceResult {
    let n = scores.len();
    let (acc, acc_stderr) = proportion(scores.iter().filter(|s| s.pred == s.label).count(), n);
    let (acc_norm, acc_norm_stderr) = proportion(scores.iter().filter(|s| s.pred_norm == s.label).count(), n);
    let chance = scores.iter().map(|s| 1.0 / s.loglik.len() as f64).sum::<f64>() / n.max(1) as f64;
    ChoiceResult {
        acc,
        acc_stderr,
        acc_norm,
        acc_norm_stderr,
        items: n,
        chance,
        scores,
        tokens,
        items_sha256: String::new(),
    }
}
