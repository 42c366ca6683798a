//! LiteRT (the former TensorFlow Lite), the runtime of Android's on-device stack, run here
//! through its own interpreter (`ai-edge-litert`) in the export environment
//! ([`super::python_env`]). microscale tokenizes (with the GGUF the file came from, through
//! llama.cpp) and scores; the interpreter only runs the file's signatures: `prefill_N` (whose
//! logits the export keeps) and `decode`, over an external KV cache.

use super::python_env::PythonEnv;
use anyhow::{anyhow, Context, Result};
use std::path::Path;

const RUNTIME: &str = include_str!("litert_runtime.py");

/// Whether `path` names a LiteRT model.
pub fn is_litert(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tflite")
}

/// Refuse, in one line, what is not a LiteRT flatbuffer (its identifier `TFL3` at byte 4).
pub fn check_file(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?;
    if f.read_exact(&mut head).is_err() || &head[4..8] != b"TFL3" {
        anyhow::bail!("{}: not a LiteRT (.tflite) file: no TFL3 identifier", path.display());
    }
    Ok(())
}

/// One request to the runtime script (`mode`: generate or bench), its JSON answer.
fn run_runtime(model: &Path, mode: &str, request: serde_json::Value) -> Result<serde_json::Value> {
    check_file(model)?;
    let env = PythonEnv::ready(true)?;
    let out = env.run(
        &format!("{}: LiteRT", model.display()),
        RUNTIME,
        &[model.as_os_str(), mode.as_ref()],
        request.to_string().as_bytes(),
        None,
    )?;
    serde_json::from_slice(&out).context("the LiteRT runtime's answer")
}

/// Run each window through the file's prefill signature of its length (a fresh KV cache per
/// window) and hand `on_window(index, logits)` the logits of positions `first ..` (each predicting
/// the next token; `n_vocab` floats per position), window by window as they come: what llama.cpp's
/// perplexity and KL divergence score, so the LiteRT file is scored by the same code.
pub fn window_logits(
    model: &Path,
    windows: &[Vec<i32>],
    first: usize,
    n_vocab: usize,
    threads: usize,
    on_window: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    check_file(model)?;
    let env = PythonEnv::ready(true)?;
    let request = serde_json::json!({"windows": windows, "first": first, "n_vocab": n_vocab, "threads": threads});
    let mut read = |stdout: &mut dyn std::io::Read| -> Result<()> {
        let mut bytes = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            bytes.resize(4 * n_vocab * (w.len() - 1 - first), 0);
            stdout.read_exact(&mut bytes).map_err(|e| {
                anyhow!("window {i}: fewer logits than {} positions of {n_vocab} ({e})", w.len() - 1 - first)
            })?;
            let logits: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            on_window(i, &logits)?;
        }
        // Anything more would mean the rows were not the ones read.
        if stdout.read(&mut [0u8; 1])? != 0 {
            anyhow::bail!("more logits than {} windows", windows.len());
        }
        Ok(())
    };
    env.run_streaming(
        &format!("{}: LiteRT", model.display()),
        RUNTIME,
        &[model.as_os_str(), "logits".as_ref()],
        request.to_string().as_bytes(),
        None,
        &mut read,
    )
}

/// Prompt processing and generation speeds of a LiteRT file through the interpreter, measured as
/// llama-bench measures llama.cpp's: `n_prompt` random tokens through `prefill_{n_prompt}`, then
/// `n_gen` tokens one at a time through `decode`, `reps` times after a warm-up.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct LiteRtSpeed {
    /// Seconds to load the file and prepare its signatures.
    pub load_s: f64,
    pub pp_tps: Vec<f64>,
    pub tg_tps: Vec<f64>,
    /// Peak resident set of the Python process running the interpreter, KiB.
    pub peak_rss_kib: u64,
}

pub fn bench(model: &Path, n_prompt: usize, n_gen: usize, reps: usize, threads: usize) -> Result<LiteRtSpeed> {
    let request = serde_json::json!({"n_prompt": n_prompt, "n_gen": n_gen, "reps": reps, "threads": threads});
    let v = run_runtime(model, "bench", request)?;
    serde_json::from_value(v).context("the LiteRT runtime's benchmark")
}

/// Greedy continuation of `prompt`: up to `n` tokens, stopping after any of `stop`.
pub fn generate_greedy(model: &Path, prompt: &[i32], n: usize, stop: &[i32], threads: usize) -> Result<Vec<i32>> {
    let v = run_runtime(
        model,
        "generate",
        serde_json::json!({"prompt": prompt, "n": n, "stop": stop, "threads": threads}),
    )?;
    v["tokens"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_i64().map(|t| t as i32)).collect())
        .ok_or_else(|| anyhow!("the LiteRT runtime returned no tokens"))
}

/// The greedy reply of a LiteRT file to `prompt` (with `chat`, a user message in the chat
/// template of the GGUF `tokenizer`, as `generate --chat` formats it for llama.cpp): its text, up
/// to the first end-of-generation token or `max_tokens`.
pub fn reply_greedy(
    model: &Path,
    tokenizer: &Path,
    prompt: &str,
    chat: bool,
    max_tokens: usize,
    threads: usize,
) -> Result<String> {
    use super::generate::{tokenize_chat, Conversation};
    let vocab_model = super::Model::load_vocab_only(tokenizer)?;
    let text = match chat {
        true => Conversation::new(&vocab_model, None)?.add_user(&vocab_model, prompt)?,
        false => prompt.to_string(),
    };
    let tokens = tokenize_chat(&vocab_model, &text, true);
    let vocab = vocab_model.inner.vocab();
    let eog = |t: i32| vocab.is_eog(llama_cpp_2::token::LlamaToken(t));
    let stop: Vec<i32> = (0..vocab_model.n_vocab() as i32).filter(|&t| eog(t)).collect();
    let out = generate_greedy(model, &tokens, max_tokens, &stop, threads)?;
    let mut bytes = Vec::new();
    for t in out.into_iter().take_while(|&t| !eog(t)) {
        bytes.extend(vocab.token_to_piece(llama_cpp_2::token::LlamaToken(t), false, None));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
