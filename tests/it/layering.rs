//! Stages only look down: every `crate::STAGE` a library file names is its own stage or one listed
//! before it in `microscale::LAYERS` (the order lib.rs documents), and the binary's `src/cli/`
//! holds no work of its own (no llama.cpp calls, no file formats).

use regex::Regex;
use std::path::Path;

fn layer_of(stage: &str) -> Option<usize> {
    microscale::LAYERS.iter().position(|level| level.contains(&stage))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_stage_uses_only_the_stages_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut stages_seen = Vec::new();
    let mut violations = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let dir = entry.path();
        if !dir.is_dir() || dir.ends_with("cli") {
            continue;
        }
        let stage = dir.file_name().unwrap().to_string_lossy().into_owned();
        let own = layer_of(&stage).unwrap_or_else(|| panic!("src/{stage}/ is not in microscale::LAYERS"));
        stages_seen.push(stage.clone());
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                for cap in uses.captures_iter(line) {
                    let used = &cap[1];
                    let Some(layer) = layer_of(used) else { continue };
                    if layer > own || (layer == own && used != stage) {
                        violations.push(format!("{}:{}: {stage} uses {used}", f.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "stages looking up or sideways:\n{}", violations.join("\n"));
    // Every stage in the list has its folder, and every folder is in the list.
    for level in microscale::LAYERS {
        for s in *level {
            assert!(stages_seen.iter().any(|x| x == s), "LAYERS names {s}, which has no src/{s}/");
        }
    }
}

#[test]
fn the_cli_only_parses_dispatches_and_prints() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let mut files = Vec::new();
    rust_files(&cli, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for forbidden in
            ["llama_cpp_sys_2::", "llama_cpp_2::", "use llama_cpp", "std::fs::write", "File::create", "unsafe "]
        {
            assert!(!text.contains(forbidden), "{} uses {forbidden}: that work belongs in the library", f.display());
        }
    }
    let main = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    assert!(main.lines().count() < 15, "src/main.rs only hands over to src/cli/");
}

#[test]
fn the_library_does_not_depend_on_the_command_line_parser() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let clap = Regex::new(r"\bclap::|use clap\b|ValueEnum").unwrap();
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(src.join("cli")) && !f.ends_with("main.rs")) {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if clap.is_match(line) {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "the library names clap (its parsers belong in src/cli/):\n{}", found.join("\n"));
}
