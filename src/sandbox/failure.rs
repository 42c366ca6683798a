//! Which [`Status`] a child that did not succeed gets, from how it ended: the cgroup's OOM-kill
//! counter, its exit code, the signal that killed it, and its last words on stderr.

use super::caps::Outcome;
use crate::engine::log::{says_out_of_memory, CHILD_PREFIX};
use crate::record::status::{Status, EXIT_OUT_OF_MEMORY};
use std::time::Duration;

/// A failed child: its status and a one-line reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub status: Status,
    pub reason: String,
}

/// The usual name of a signal.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGTRAP => "SIGTRAP",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
}

/// llama.cpp's last words in a child's stderr: a failed GGML_ASSERT if there is one, else the last
/// line the child forwarded from llama.cpp's log.
pub fn last_llama_line(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("GGML_ASSERT") || l.contains("GGML_ABORT"))
        .map(|l| l.to_string())
        .or_else(|| lines.iter().rev().find_map(|l| l.strip_prefix(CHILD_PREFIX)).map(str::to_string))
}

/// The child's own error message (its last `error: ` line), if it printed one.
pub fn error_line(stderr: &str) -> Option<String> {
    stderr.lines().rev().find_map(|l| l.strip_prefix("error: ")).map(|l| l.trim().to_string())
}

/// Why a child that did not succeed ended. `cap` names the memory cap ("3.0 GiB", or None).
pub fn classify(o: &Outcome, cap: Option<&str>, timeout: Duration) -> Failure {
    let does_not_fit = |why: String| match cap {
        Some(c) => format!("does not fit in {c}: {why}"),
        None => format!("out of memory (no memory cap): {why}"),
    };
    if o.oom_killed {
        return Failure {
            status: Status::Oom,
            reason: does_not_fit(format!("killed by the memory cap ({})", o.enforcement.memory)),
        };
    }
    if o.timed_out {
        return Failure { status: Status::Timeout, reason: format!("timed out after {} s", timeout.as_secs()) };
    }
    let message = error_line(&o.stderr);
    // The child's own allocation failed: it says so with its exit code, or Rust's allocator and
    // C++'s std::bad_alloc abort the process with their own last words.
    let alloc_abort = o.signal == Some(libc::SIGABRT)
        && o.stderr.lines().any(|l| l.starts_with("memory allocation of") || l.contains("std::bad_alloc"));
    if o.exit_code == Some(EXIT_OUT_OF_MEMORY) || alloc_abort {
        let why =
            message.clone().or_else(|| o.stderr.lines().rev().find(|l| says_out_of_memory(l)).map(str::to_string));
        return Failure {
            status: Status::Oom,
            reason: does_not_fit(why.unwrap_or_else(|| "allocation failed".into())),
        };
    }
    if let Some(sig) = o.signal {
        let mut reason = format!("killed by {}", signal_name(sig));
        if sig == libc::SIGKILL && cap.is_some() {
            reason += " (not by the memory cap: its oom_kill counter did not move)";
        }
        if let Some(line) = last_llama_line(&o.stderr) {
            reason += &format!("; llama.cpp's last log line: {line}");
        }
        return Failure { status: Status::Crash, reason };
    }
    let reason = message.unwrap_or_else(|| match o.exit_code {
        Some(c) => format!("the child exited with code {c} and no message"),
        None => "the child ended without a status".into(),
    });
    Failure { status: Status::Error, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::caps::Enforcement;

    fn outcome(exit_code: Option<i32>, signal: Option<i32>, stderr: &str) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr: stderr.into(),
            exit_code,
            signal,
            max_rss: 0,
            oom_killed: false,
            timed_out: false,
            enforcement: Enforcement { memory: "cgroup v2 memory.max = 1".into(), ..Default::default() },
        }
    }

    #[test]
    fn failures_are_named_for_what_they_are() {
        let t = Duration::from_secs(9);
        let segv = outcome(None, Some(libc::SIGSEGV), "llama.cpp: load_tensors: CPU model buffer size = 1 MiB\n");
        let f = classify(&segv, Some("4.0 GiB"), t);
        assert_eq!(f.status, Status::Crash);
        assert!(f.reason.contains("SIGSEGV") && f.reason.contains("CPU model buffer size"), "{}", f.reason);
        assert!(!f.reason.contains("does not fit"));

        let bad = outcome(
            Some(1),
            None,
            "llama.cpp: noise\nerror: m.gguf: llama.cpp could not load the model: wrong shape\n",
        );
        let f = classify(&bad, Some("4.0 GiB"), t);
        assert_eq!(
            f,
            Failure { status: Status::Error, reason: "m.gguf: llama.cpp could not load the model: wrong shape".into() }
        );

        let oom = outcome(Some(EXIT_OUT_OF_MEMORY), None, "error: out of memory: m.gguf: failed to allocate buffer\n");
        let f = classify(&oom, Some("300 MiB"), t);
        assert_eq!(f.status, Status::Oom);
        assert!(f.reason.starts_with("does not fit in 300 MiB: "), "{}", f.reason);

        let mut killed = outcome(None, Some(libc::SIGKILL), "");
        killed.oom_killed = true;
        assert_eq!(classify(&killed, Some("300 MiB"), t).status, Status::Oom);
        killed.oom_killed = false;
        let f = classify(&killed, Some("300 MiB"), t);
        assert_eq!(f.status, Status::Crash);
        assert!(f.reason.contains("not by the memory cap"), "{}", f.reason);

        let assert = outcome(None, Some(libc::SIGABRT), "/x/ggml.c:123: GGML_ASSERT(n > 0) failed\n#0 0x1 in ??\n");
        let f = classify(&assert, None, t);
        assert_eq!(f.status, Status::Crash);
        assert!(f.reason.contains("GGML_ASSERT(n > 0) failed"), "{}", f.reason);

        let mut slow = outcome(None, Some(libc::SIGKILL), "");
        slow.timed_out = true;
        assert_eq!(classify(&slow, None, t), Failure { status: Status::Timeout, reason: "timed out after 9 s".into() });
    }
}
