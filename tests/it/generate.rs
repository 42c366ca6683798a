//! `generate` and `chat` on the default model through the real engine, with llama.cpp's own
//! `llama-completion` as the oracle for what a greedy chat answer is.

use crate::common;

use common::{default_model, llama_tools};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_microscale");
const QUESTION: &str = "What is the capital of France?";
/// llama-completion's answer on the default model, measured when the feature was asked for; the
/// tests also run llama-completion itself on every file they check.
const PARIS: &str = "The capital of France is Paris.";

/// `generate MODEL --chat -p QUESTION --temp 0 -n N`, then `extra`.
fn ask(model: &str, n: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        ["generate", model, "--chat", "-p", QUESTION, "--temp", "0", "-n", n].iter().map(|s| s.to_string()).collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn run(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().expect("microscale runs")
}

fn ok_json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "microscale {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

/// What `llama-completion -cnv -st --temp 0 -n 32` answers: the text it prints after the prompt's
/// echo, up to its end-of-turn marker (it prints ` [end of text]`/the next prompt after it).
fn llama_completion_answer(model: &Path) -> String {
    let bin = llama_tools::dir().join("llama-completion");
    let out = Command::new(&bin)
        .args(["-m", model.to_str().unwrap(), "-cnv", "-st", "--temp", "0", "-n", "32", "-t", "2"])
        .args(["-p", QUESTION, "--no-display-prompt"])
        .stdin(Stdio::null())
        .output()
        .expect("llama-completion runs");
    assert!(out.status.success(), "llama-completion failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = text.split("[end of text]").next().unwrap();
    text.trim().trim_start_matches('>').trim().to_string()
}

fn q4_k_m() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("microscale-generate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("q4_k_m.gguf");
        let hf = default_model::hf_dir();
        let o = run(&["convert", hf.to_str().unwrap(), "-o", out.to_str().unwrap(), "--outtype", "q4_k_m", "-q"]);
        assert!(o.status.success(), "convert failed: {}", String::from_utf8_lossy(&o.stderr));
        out
    })
    .clone()
}

fn greedy_chat(model: &Path) -> Value {
    ok_json(&strs(&ask(model.to_str().unwrap(), "32", &["-t", "2", "--json"])))
}

#[test]
fn greedy_chat_answers_as_llama_completion_does() {
    for model in [default_model::gguf(), q4_k_m()] {
        let oracle = llama_completion_answer(&model);
        let ours = greedy_chat(&model);
        assert_eq!(ours["text"].as_str().unwrap().trim(), oracle, "{}", model.display());
        assert_eq!(oracle, PARIS, "{}: llama-completion's own answer changed", model.display());
        // It stopped at the end-of-turn token, not at the budget.
        assert_eq!(ours["stop"], "end_of_generation");
        assert!(ours["generated_tokens"].as_u64().unwrap() < 32);
        assert!(ours["prompt_tokens"].as_u64().unwrap() > 5, "the chat template wraps the question");
        assert!(ours["peak_rss"].as_u64().unwrap() > 50 << 20);
        assert!(ours["generation_tps"].as_f64().unwrap() > 0.0 && ours["ttft_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn streamed_text_is_the_reply_and_stats_go_to_stderr() {
    let model = default_model::gguf();
    let out = run(&strs(&ask(model.to_str().unwrap(), "32", &["-t", "2"])));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), PARIS);
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["prompt ", "generation ", "t/s", "time to first token", "peak memory", "stop: end of generation"] {
        assert!(err.contains(want), "stderr lacks {want:?}: {err}");
    }
}

#[test]
fn a_fixed_seed_repeats_and_max_tokens_is_honoured() {
    let model = default_model::gguf();
    let m = model.to_str().unwrap();
    let sample = |seed: &str| {
        ok_json(&[
            "generate",
            m,
            "-p",
            "Once upon a time",
            "--temp",
            "1.0",
            "--seed",
            seed,
            "-n",
            "12",
            "-t",
            "2",
            "--json",
        ])
    };
    let a = sample("42");
    let b = sample("42");
    assert_eq!(a["text"], b["text"], "the same seed must give the same text");
    assert_eq!(a["seed"], 42);
    // The seed matters: among a few others, some text differs.
    let others: Vec<Value> = ["1", "2", "3"].iter().map(|s| sample(s)["text"].clone()).collect();
    assert!(others.iter().any(|t| *t != a["text"]), "every seed gave the same text: {others:?}");
    for r in [&a, &b] {
        if r["stop"] == "max_tokens" {
            assert_eq!(r["generated_tokens"], 12);
        } else {
            assert!(r["generated_tokens"].as_u64().unwrap() < 12);
        }
    }
    // A plain prompt at temperature 1 runs to the budget here; make sure that case was seen.
    let long = ok_json(&["generate", m, "-p", "The history of Rome", "--temp", "0", "-n", "5", "-t", "2", "--json"]);
    assert_eq!(long["stop"], "max_tokens");
    assert_eq!(long["generated_tokens"], 5);
}

#[test]
fn generation_under_a_memory_cap_below_the_model_does_not_fit() {
    let model = default_model::gguf();
    let m = model.to_str().unwrap();
    let args = ask(m, "8", &["--profile", "host", "--mem-limit", "40MiB"]);
    let out = run(&strs(&args));
    assert!(!out.status.success(), "a 100 MiB model cannot run in 40 MiB");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit in 40 MiB"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let mut json_args = strs(&args);
    json_args.push("--json");
    let out = run(&json_args);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "oom", "{v}");
    assert!(v["report"].is_null());
}

#[test]
fn generation_under_a_profile_streams_and_reports_the_caps() {
    let model = default_model::gguf();
    let m = model.to_str().unwrap();
    let out = run(&strs(&ask(m, "32", &["--profile", "pi4-4gb"])));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), PARIS);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("profile pi4-4gb: 4 threads, memory cap 3.0 GiB"), "{err}");
    assert!(err.contains(": fits"), "{err}");
    let v = ok_json(&strs(&ask(m, "32", &["--profile", "pi4-4gb", "--json"])));
    assert_eq!(v["status"], "fits");
    assert_eq!(v["report"]["text"].as_str().unwrap().trim(), PARIS);
    assert_eq!(v["report"]["threads"], 4);
    // Read into RAM under the cap: the peak holds the whole file.
    let size = std::fs::metadata(&model).unwrap().len();
    assert!(v["report"]["peak_rss"].as_u64().unwrap() > size, "{v}");
}

#[test]
fn bad_generation_settings_are_one_line_errors() {
    let model = default_model::gguf();
    let m = model.to_str().unwrap();
    for (args, want) in [
        (vec!["generate", m, "-p", "x", "--top-p", "0"], "--top-p must be in (0, 1]"),
        (vec!["generate", m, "-p", "x", "--repeat-penalty", "0"], "--repeat-penalty must be positive"),
        (vec!["generate", "no-such.gguf", "-p", "x"], "no-such.gguf: no such model file"),
        (
            vec!["generate", m, "-p", "x", "--chat", "--chat-template", "{{ nonsense }}"],
            "does not support this chat template",
        ),
        (vec!["generate", m, "-p", &"word ".repeat(200), "-c", "64"], "the prompt needs"),
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// A chat run in a real pseudo-terminal: type each line after the `> ` prompt, collect what the
/// program printed in reply, then Ctrl-D.
fn chat_in_a_terminal(model: &Path, extra: &[&str], lines: &[&str]) -> Vec<String> {
    let (mut master, slave) = openpty();
    let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut child = KillOnDrop(
        Command::new(EXE)
            .args(["chat", model.to_str().unwrap(), "--temp", "0", "-n", "48", "-q"])
            .args(extra)
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave))
            .spawn()
            .unwrap(),
    );
    drop(slave);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut transcript = String::new();
    // Wait for the next `> ` prompt after byte `from` (after a newline: the reply's end).
    let wait_for_prompt = |transcript: &mut String, from: usize| {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !(transcript[from..].ends_with("> ") && (from == 0 || transcript[from..].contains('\n'))) {
            let left = deadline.saturating_duration_since(Instant::now());
            let bytes = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no prompt within 180 s: {transcript}"));
            transcript.push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
        }
    };
    let mut replies = Vec::new();
    wait_for_prompt(&mut transcript, 0);
    for line in lines {
        let before = transcript.len();
        master.write_all(format!("{line}\n").as_bytes()).unwrap();
        wait_for_prompt(&mut transcript, before);
        // The terminal echoes the typed line first; the reply follows, then the next prompt.
        let turn = &transcript[before..transcript.len() - 2];
        let reply = turn.split_once('\n').map(|(_, r)| r).unwrap_or("");
        replies.push(reply.trim().to_string());
    }
    master.write_all(&[4]).unwrap(); // Ctrl-D
    let status = child.0.wait().unwrap();
    assert!(status.success(), "chat exited with {status}: {transcript}");
    replies
}

/// A child that does not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openpty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty failed");
    unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn chat_keeps_the_conversation_and_reset_clears_it() {
    let model = default_model::gguf();
    let m = model.to_str().unwrap();
    let follow_up = "What is the population of that city?";
    let replies = chat_in_a_terminal(&model, &["-t", "2"], &[QUESTION, follow_up, "/stats", "/reset", follow_up]);
    assert_eq!(replies[0], PARIS);
    // "That city" is resolved from the first exchange: it is in the KV cache.
    assert!(replies[1].contains("Paris"), "{replies:?}");
    assert!(
        replies[2].contains("context ") && replies[2].contains("2 turn(s)") && replies[2].contains("t/s"),
        "{replies:?}"
    );
    assert_eq!(replies[3], "(conversation cleared)");
    // After /reset the same question has nothing to refer to: the answer is the one a fresh
    // process gives to it alone.
    let alone = ok_json(&["generate", m, "--chat", "-p", follow_up, "--temp", "0", "-n", "48", "-t", "2", "--json"]);
    assert_eq!(replies[4], alone["text"].as_str().unwrap().trim());
    assert!(!replies[4].contains("Paris"), "{replies:?}");
    // The follow-up's greedy answer is what the same conversation gets when formatted from scratch
    // (ChatML, written out here) and decoded at once: the cache holds exactly that text.
    let whole = format!(
        "<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>user\n{follow_up}<|im_end|>\n<|im_start|>assistant\n",
        replies[0]
    );
    let fresh = ok_json(&["generate", m, "-p", &whole, "--temp", "0", "-n", "48", "-t", "2", "--json"]);
    assert_eq!(fresh["text"].as_str().unwrap().trim(), replies[1]);
}

#[test]
fn chat_runs_under_a_profile_and_says_when_it_does_not_fit() {
    let model = default_model::gguf();
    // The whole conversation in the capped child, on the same terminal.
    let replies = chat_in_a_terminal(&model, &["--profile", "phone-6gb"], &[QUESTION, "/stats"]);
    assert_eq!(replies[0], PARIS);
    assert!(replies[1].contains("context "), "{replies:?}");
    let out = run(&["chat", model.to_str().unwrap(), "--profile", "host", "--mem-limit", "40MiB"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit in 40 MiB"), "{err}");
}
