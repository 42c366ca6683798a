//! llama.cpp's own log, taken over: kept out of microscale's output unless asked for, remembered
//! so that a failure can quote llama.cpp's reason, and forwarded line by line to stderr in a
//! measuring child, so that the parent can name what a crashed child was doing last.

use llama_cpp_sys_2 as sys;
use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Where llama.cpp's log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// Remembered only (the default).
    Quiet = 0,
    /// Also printed to stderr as llama.cpp prints them (`-v`).
    Verbose = 1,
    /// Also printed to stderr with [`CHILD_PREFIX`], for the parent of a measuring child.
    Child = 2,
}

/// How a child marks llama.cpp's lines on its stderr.
pub const CHILD_PREFIX: &str = "llama.cpp: ";

static MODE: AtomicU8 = AtomicU8::new(LogMode::Quiet as u8);
const KEEP: usize = 64;

struct Recent {
    /// The line being assembled (llama.cpp logs in pieces).
    partial: String,
    partial_level: sys::ggml_log_level,
    lines: VecDeque<(sys::ggml_log_level, String)>,
}

static RECENT: Mutex<Recent> = Mutex::new(Recent { partial: String::new(), partial_level: 0, lines: VecDeque::new() });

pub fn set_mode(mode: LogMode) {
    MODE.store(mode as u8, Ordering::SeqCst);
}

fn mode() -> LogMode {
    match MODE.load(Ordering::SeqCst) {
        1 => LogMode::Verbose,
        2 => LogMode::Child,
        _ => LogMode::Quiet,
    }
}

unsafe extern "C" fn on_log(level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for this call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let mode = mode();
    if mode == LogMode::Verbose {
        eprint!("{text}");
    }
    let Ok(mut recent) = RECENT.lock() else { return };
    if level != sys::GGML_LOG_LEVEL_CONT {
        recent.partial_level = level;
    }
    recent.partial.push_str(&text);
    while let Some(end) = recent.partial.find('\n') {
        let line: String = recent.partial.drain(..=end).collect();
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        // Debug lines (one per tensor at load) would drown the child's stderr.
        if mode == LogMode::Child && recent.partial_level != sys::GGML_LOG_LEVEL_DEBUG {
            eprintln!("{CHILD_PREFIX}{line}");
        }
        let level = recent.partial_level;
        if recent.lines.len() == KEEP {
            recent.lines.pop_front();
        }
        recent.lines.push_back((level, line));
    }
}

/// Route llama.cpp's (and ggml's) log through [`on_log`].
pub fn install() {
    // SAFETY: `on_log` is a plain function valid for the whole process.
    unsafe { sys::llama_log_set(Some(on_log), std::ptr::null_mut()) };
}

/// The most telling recent error line: llama.cpp's "error loading model: …" if there is one, else
/// the last line logged at error level.
pub fn last_error() -> Option<String> {
    let recent = RECENT.lock().ok()?;
    let errors = || recent.lines.iter().rev().filter(|(l, _)| *l == sys::GGML_LOG_LEVEL_ERROR);
    errors()
        .find(|(_, line)| line.contains("error loading model"))
        .or_else(|| errors().next())
        .map(|(_, line)| line.clone())
}

/// Forget what was remembered (before an operation whose failure should quote only itself).
pub fn clear() {
    if let Ok(mut recent) = RECENT.lock() {
        recent.lines.clear();
        recent.partial.clear();
    }
}

/// Does a llama.cpp message say that memory ran out (rather than that the file is bad)?
pub fn says_out_of_memory(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("bad_alloc")
        || l.contains("out of memory")
        || l.contains("cannot allocate memory")
        || l.contains("failed to allocate")
        || l.contains("unable to allocate")
}

#[cfg(test)]
mod tests {
    #[test]
    fn allocation_failures_are_recognised() {
        use super::says_out_of_memory as oom;
        assert!(oom("llama_model_load: error loading model: std::bad_alloc"));
        assert!(oom("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 140000000"));
        assert!(oom("llama_model_load: error loading model: mmap failed: Cannot allocate memory"));
        assert!(!oom("llama_model_load: error loading model: check_tensor_dims: tensor 'x' has wrong shape"));
    }
}
