//! Evaluation through llama.cpp on the default model: perplexity against an independent NLL
//! computation, KL divergence, multiple-choice scoring, and data errors.

use crate::common;

use microscale::convert::{convert, ConvertOptions};
use microscale::engine::quantize::{stock_quantize, StockOptions};
use microscale::engine::Model;
use microscale::eval::choice::{score_items, ChoiceOptions};
use microscale::eval::data::{load_arc, load_generic, load_sst2, McItem};
use microscale::eval::kld::{kl_divergence, kl_divergence_from_file, save_base_log_probs, BaseLogProbsFile};
use microscale::eval::perplexity::{perplexity_of_tokens, PerplexityOptions};
use microscale::quant::mix::Scheme;
use sha2::Digest;
use std::path::PathBuf;
use std::sync::OnceLock;

const WIKI_TEST: &str = "data/wikitext-2/wiki.test.raw";

/// The default model as F32 GGUF (and a stock Q8_0 of it), made once for this file's tests.
fn models() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static CELL: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    CELL.get_or_init(|| {
        let hf = common::default_model::hf_dir();
        let tmp = tempfile::tempdir().unwrap();
        let f32_gguf = tmp.path().join("f32.gguf");
        convert(&hf, &f32_gguf, &ConvertOptions::new(Scheme::F32)).unwrap();
        let q8 = tmp.path().join("q8_0.gguf");
        stock_quantize(&f32_gguf, &q8, Scheme::Q8_0, None, &StockOptions { threads: 2, ..Default::default() }).unwrap();
        (tmp, f32_gguf, q8)
    })
}

fn threads() -> usize {
    microscale::engine::default_threads()
}

/// Independent reference: log-softmax in f64 from scratch.
fn nll(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max + logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    lse - logits[tok] as f64
}

#[test]
fn perplexity_equals_an_independent_nll_computation() {
    let (_, f32_gguf, _) = models();
    let model = Model::load(f32_gguf).unwrap();
    let text = std::fs::read_to_string(WIKI_TEST).unwrap();
    let tokens = model.tokenize(&text, true);
    let n_ctx = 512;
    let ours = perplexity_of_tokens(&model, &tokens, &PerplexityOptions::new(threads(), Some(4)), true).unwrap();

    // One window at a time, every position's logits, scored by hand.
    let mut session = model.session(n_ctx, n_ctx, threads()).unwrap();
    let n_vocab = model.n_vocab();
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    for w in 0..4 {
        let mut window = tokens[w * n_ctx..(w + 1) * n_ctx].to_vec();
        if model.add_bos() {
            window[0] = model.bos();
        }
        let logits = session.logits(&window, 0).unwrap();
        for pos in n_ctx / 2..n_ctx - 1 {
            let v = nll(&logits[pos * n_vocab..(pos + 1) * n_vocab], window[pos + 1] as usize);
            sum += v;
            sum2 += v * v;
            count += 1;
        }
    }
    let mean = sum / count as f64;
    let ppl = mean.exp();
    let se = ((sum2 / count as f64 - mean * mean) / (count - 1) as f64).sqrt() * ppl;
    assert_eq!(ours.scored_tokens, count);
    assert!((ours.ppl - ppl).abs() / ppl < 1e-6, "ours {} reference {ppl}", ours.ppl);
    assert!((ours.ppl_stderr - se).abs() / se < 1e-4, "stderr ours {} reference {se}", ours.ppl_stderr);
}

#[test]
fn kld_of_a_model_against_itself_is_zero() {
    let (_, f32_gguf, _) = models();
    let model = Model::load(f32_gguf).unwrap();
    let base = Model::load(f32_gguf).unwrap();
    let text = std::fs::read_to_string(WIKI_TEST).unwrap();
    let tokens = base.tokenize(&text, true);
    let k = kl_divergence(&model, &base, &tokens, &PerplexityOptions::new(threads(), Some(2)), true).unwrap();
    // The base log-probabilities are stored as 16-bit fixed point (as llama-perplexity does), so
    // "zero" is zero up to that rounding.
    assert!(k.kld_mean.abs() < 1e-5, "KLD {}", k.kld_mean);
    assert_eq!(k.same_top, 1.0);
    // PPL(Q) is the model's own perplexity on the same windows. (PPL(base) is not: like the tool,
    // base log-probabilities below 16 nats under the top are clipped, which biases it down a little.)
    let p = perplexity_of_tokens(&model, &tokens, &PerplexityOptions::new(threads(), Some(2)), true).unwrap();
    assert!((k.ppl - p.ppl).abs() / p.ppl < 1e-5, "KLD's PPL(Q) {} vs perplexity {}", k.ppl, p.ppl);
}

#[test]
fn kld_of_q8_0_against_f32_is_small_and_positive() {
    let (_, f32_gguf, q8) = models();
    let model = Model::load(q8).unwrap();
    let base = Model::load(f32_gguf).unwrap();
    let text = std::fs::read_to_string(WIKI_TEST).unwrap();
    let tokens = base.tokenize(&text, true);
    let k = kl_divergence(&model, &base, &tokens, &PerplexityOptions::new(threads(), Some(2)), true).unwrap();
    assert!(k.kld_mean > 1e-5 && k.kld_mean < 0.05, "KLD {}", k.kld_mean);
    assert!(k.kld_p99 >= k.kld_median && k.kld_p999 >= k.kld_p99);
    assert!(k.same_top > 0.8 && k.same_top < 1.0, "same top {}", k.same_top);
}

#[test]
fn a_saved_base_gives_the_same_kld_as_the_base_model_and_reads_llama_perplexitys_file() {
    let (tmp, f32_gguf, q8) = models();
    let model = Model::load(q8).unwrap();
    let base = Model::load(f32_gguf).unwrap();
    let text = std::fs::read_to_string(WIKI_TEST).unwrap();
    let tokens = base.tokenize(&text, true);
    let opts = PerplexityOptions::new(threads(), Some(3));
    let direct = kl_divergence(&model, &base, &tokens, &opts, true).unwrap();

    let saved = tmp.path().join("f32.kld");
    save_base_log_probs(&base, &tokens, &opts, &saved, true).unwrap();
    // llama-perplexity's layout: magic, 3 × i32, the windows' tokens, 255 rows per window.
    let n_vocab = base.n_vocab();
    let expected = 20 + 4 * 3 * 512 + 3 * 255 * 2 * (2 * n_vocab.div_ceil(2) + 4);
    assert_eq!(std::fs::metadata(&saved).unwrap().len() as usize, expected);
    let file = BaseLogProbsFile::open(&saved).unwrap();
    let from_file = kl_divergence_from_file(&model, &file, &PerplexityOptions::new(threads(), None), true).unwrap();
    assert_eq!(from_file.tokens, direct.tokens);
    for (a, b, what) in [
        (from_file.kld_mean, direct.kld_mean, "mean KLD"),
        (from_file.kld_p99, direct.kld_p99, "KLD p99"),
        (from_file.same_top, direct.same_top, "same top"),
        (from_file.ppl, direct.ppl, "PPL"),
        (from_file.ppl_base, direct.ppl_base, "base PPL"),
    ] {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}: saved base {a}, base model {b}");
    }

    // A file of a single window (fewer than a text needs, as a sweep with one KLD window saves).
    let one = tmp.path().join("one.kld");
    save_base_log_probs(&base, &tokens, &PerplexityOptions::new(threads(), Some(1)), &one, true).unwrap();
    // Asking for more windows than it holds gives those it holds, as a short text does.
    let k = kl_divergence_from_file(&model, &BaseLogProbsFile::open(&one).unwrap(), &opts, true).unwrap();
    assert_eq!(k.tokens, 255);

    // A file that lies about its size is one clear error naming it.
    let bytes = std::fs::read(&saved).unwrap();
    let cut = tmp.path().join("cut.kld");
    std::fs::write(&cut, &bytes[..bytes.len() - 2]).unwrap();
    let err = format!("{:#}", BaseLogProbsFile::open(&cut).err().unwrap());
    assert!(err.contains("cut.kld") && err.contains("needs"), "{err}");

    // llama-perplexity writes the same format: read its file, same tokens, and a KLD that agrees
    // with ours to the rounding of two llama.cpp versions' kernels.
    let theirs = tmp.path().join("llama-perplexity.kld");
    let out = std::process::Command::new(common::llama_tools::dir().join("llama-perplexity"))
        .args(["-m", f32_gguf.to_str().unwrap(), "-f", WIKI_TEST, "--chunks", "3", "-c", "512", "-b", "512"])
        .args(["-t", &threads().to_string(), "--kl-divergence-base", theirs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs = BaseLogProbsFile::open(&theirs).unwrap();
    assert_eq!((theirs.n_ctx, theirs.n_vocab, theirs.n_chunk), (512, n_vocab, 3));
    assert_eq!(theirs.tokens, file.tokens, "llama-perplexity tokenized the text as we did");
    let k = kl_divergence_from_file(&model, &theirs, &PerplexityOptions::new(threads(), None), true).unwrap();
    assert!((k.kld_mean - direct.kld_mean).abs() <= 0.02 * direct.kld_mean, "{} vs {}", k.kld_mean, direct.kld_mean);
}

fn mc(context: &str, choices: &[&str], label: usize) -> McItem {
    McItem { context: context.into(), choices: choices.iter().map(|c| c.to_string()).collect(), label }
}

#[test]
fn multiple_choice_scores_copying_and_length() {
    let (_, f32_gguf, _) = models();
    let model = Model::load(f32_gguf).unwrap();
    let verbatim = "The committee approved the new harbour bridge on Tuesday after a long debate.";
    let items = vec![
        // The right answer repeats the context verbatim: an induction-capable model copies.
        mc(
            &format!("{verbatim}\nRepeat the sentence exactly:\n"),
            &[verbatim, "Purple elephants quietly juggle seventeen frozen violins.", "Tuesday debate bridge."],
            0,
        ),
        // Length matters: the long answer loses on summed log-probability but wins per character.
        mc("Say yes many times: yes", &[" yes", " yes yes yes yes yes yes yes yes yes yes yes yes"], 1),
    ];
    let r = score_items(&model, &items, &ChoiceOptions::new(threads()), "test", true).unwrap();
    assert_eq!(r.scores[0].pred, 0, "{:?}", r.scores[0]);
    assert_eq!(r.scores[0].pred_norm, 0);
    let s = &r.scores[1];
    assert_ne!(s.pred, s.pred_norm, "acc and acc_norm should disagree: {s:?}");
    assert_eq!(s.pred, 0);
    assert_eq!(s.pred_norm, 1);
}

#[test]
fn batched_scoring_equals_one_item_at_a_time() {
    // Packing several items (and a shared prefix) into one decode must not change any score.
    let (_, f32_gguf, _) = models();
    let model = Model::load(f32_gguf).unwrap();
    let items = load_arc(&PathBuf::from("data/arc/ARC-Easy-Dev.jsonl")).unwrap()[..6].to_vec();
    let packed = score_items(&model, &items, &ChoiceOptions::new(threads()), "packed", true).unwrap();
    for (i, item) in items.iter().enumerate() {
        let alone =
            score_items(&model, std::slice::from_ref(item), &ChoiceOptions::new(threads()), "alone", true).unwrap();
        for (a, b) in packed.scores[i].loglik.iter().zip(&alone.scores[0].loglik) {
            // Batch composition changes llama.cpp's kernels and float summation order, nothing more
            // (a wrong logit row would be off by whole nats).
            assert!((a - b).abs() < 1e-3 * a.abs().max(1.0), "item {i}: packed {a} alone {b}");
        }
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn data_errors_name_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    type Loader = fn(&std::path::Path) -> anyhow::Result<()>;
    let cases: Vec<(PathBuf, Loader, &str)> = vec![
        (
            write(tmp.path(), "bad-json.jsonl", "{\"context\": \"a\", \"choices\": [\"b\"], \"label\": 0}\n{oops\n"),
            |p| load_generic(p).map(|_| ()),
            ":2: malformed JSON",
        ),
        (
            write(tmp.path(), "range.jsonl", "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 2}\n"),
            |p| load_generic(p).map(|_| ()),
            ":1: label 2 out of range",
        ),
        (
            write(tmp.path(), "empty.jsonl", "{\"context\": \"a\", \"choices\": [], \"label\": 0}\n"),
            |p| load_generic(p).map(|_| ()),
            ":1: empty choices",
        ),
        (
            write(tmp.path(), "arc.jsonl", "{\"question\": {\"stem\": \"q\", \"choices\": [{\"text\": \"x\", \"label\": \"A\"}]}, \"answerKey\": \"B\"}\n"),
            |p| load_arc(p).map(|_| ()),
            ":1: answerKey \"B\" matches no choice label",
        ),
        (write(tmp.path(), "sst2.tsv", "sentence\tlabel\ngood film\t1\nno label here\n"), |p| load_sst2(p).map(|_| ()), ":3: expected"),
    ];
    for (path, load, needle) in cases {
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(needle), "{err} lacks {needle:?}");
    }
}

#[test]
fn shipped_data_sets_load_and_match_their_checksums() {
    let data = microscale::util::data::DataDir::resolve(None).root;
    assert!(data.ends_with("data"), "{}", data.display());
    // Every file is listed in SHA256SUMS and in the README with the same digest.
    let sums = std::fs::read_to_string(data.join("SHA256SUMS")).unwrap();
    let readme = std::fs::read_to_string(data.join("README.md")).unwrap();
    for line in sums.lines() {
        let (digest, file) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(data.join(file)).unwrap();
        let got: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, digest, "{file}");
        assert!(readme.contains(digest), "data/README.md lacks the sha256 of {file}");
    }
    assert_eq!(sums.lines().count(), 7);
    assert_eq!(load_sst2(&data.join("sst2/dev.tsv")).unwrap().len(), 872);
    assert_eq!(load_arc(&data.join("arc/ARC-Easy-Dev.jsonl")).unwrap().len(), 570);
    let challenge = load_arc(&data.join("arc/ARC-Challenge-Dev.jsonl")).unwrap();
    assert_eq!(challenge.len(), 299);
    assert!(challenge.iter().all(|i| i.label < i.choices.len()));
}
