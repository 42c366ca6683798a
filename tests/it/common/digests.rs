//! The checked-in digests of the default model's conversions (tests/fixtures/default-model.sha256): the
//! bytes microscale writes on every CPU.

use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::Command;

pub struct Expected {
    pub sha256: String,
    pub name: String,
    /// `microscale convert SRC -o OUT` arguments.
    pub args: Vec<String>,
}

pub fn expected() -> Vec<Expected> {
    let text = std::fs::read_to_string("tests/fixtures/default-model.sha256").unwrap();
    let rows: Vec<Expected> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.split_whitespace();
            let sha256 = f.next().unwrap().to_string();
            assert_eq!(sha256.len(), 64, "{l}");
            Expected { sha256, name: f.next().unwrap().to_string(), args: f.map(str::to_string).collect() }
        })
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for required in ["q4_k_m", "iq4_xs", "q2_k"] {
        assert!(names.contains(&required), "the digests must cover {required}");
    }
    rows
}

pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `exe convert SRC -o out --threads 2 -q <args>`, asserting it succeeds.
pub fn convert(exe: &Path, src: &Path, out: &Path, args: &[String]) {
    let o = Command::new(exe).arg("convert").arg(src).arg("-o").arg(out).arg("-q").args(args).output().unwrap();
    assert!(o.status.success(), "{} convert {args:?}: {}", exe.display(), String::from_utf8_lossy(&o.stderr));
}
