//! Test-only fault injection, so that the tests can prove a crash is reported as a crash.
//!
//! `MICROSCALE_FAULT=POINT=KIND[,POINT=KIND…]` makes the process die at a named point: `segv`
//! raises SIGSEGV, `abort` aborts (what a failed `GGML_ASSERT` does). Points: `bench-child` (the
//! measuring child, after loading the model) and `variant:NAME` (a sweep variant's child, before
//! it builds the variant). Nothing reads the variable outside these points.

pub const ENV: &str = "MICROSCALE_FAULT";

/// Die here if the environment asks for a fault at `point`.
pub fn at(point: &str) {
    let Ok(spec) = std::env::var(ENV) else { return };
    for item in spec.split(',') {
        let Some((p, kind)) = item.split_once('=') else { continue };
        if p.trim() != point {
            continue;
        }
        match kind.trim() {
            // SAFETY: restoring the default action and raising the signal, which ends the process.
            // (Rust's runtime handles SIGSEGV to detect stack overflows; a raised signal would
            // return from its handler, where a real fault would fault again.)
            "segv" => unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            },
            "abort" => std::process::abort(),
            _ => {}
        }
    }
}
