//! The linked llama.cpp is built for this machine but without ggml's AMX backend (whose matrix
//! multiplication segfaults on Intel Sapphire Rapids, llama.cpp issue 20824), and eval runs from
//! anywhere, not only inside the checkout.

use crate::common;

use llama_cpp_sys_2 as sys;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn ggml_reports_no_amx_compiled_in() {
    // ggml's own feature report: compile-time facts of the linked kernels.
    assert_eq!(unsafe { sys::ggml_cpu_has_amx_int8() }, 0, "ggml was compiled with AMX");
    let info = microscale::engine::info::engine_info();
    assert!(!info.amx_compiled);
    assert!(!info.system_info.contains("AMX"), "{}", info.system_info);
    // Native SIMD is kept: on x86-64 at least AVX2 (every x86 machine this project runs on has it).
    if cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("avx2") {
        assert!(info.cpu_features.iter().any(|f| f == "AVX2"), "{:?}", info.cpu_features);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_microscale")).args(["info", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["amx_compiled"], false);
    assert_eq!(json["llama_cpp_sys_2"], microscale::engine::LLAMA_CPP_SYS_VERSION);
}

/// The CMake cache of the llama.cpp build this test binary links (the newest under this target dir).
fn cmake_cache() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap(); // target/<profile>/deps/..
    let mut caches: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(profile_dir.join("build"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("llama-cpp-sys-2-"))
        .map(|e| e.path().join("out/build/CMakeCache.txt"))
        .filter(|p| p.exists())
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    caches.sort();
    caches.pop().expect("a llama-cpp-sys-2 build").1
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_build_flags_keep_amx_off_even_on_a_sapphire_rapids_host() {
    // On a host without AMX, -march=native enables none anyway, so the runtime report above
    // proves nothing about AMX hosts. Check the flags themselves: llama.cpp was configured with
    // them, and with them the compiler defines no AMX macro even for a Sapphire Rapids target.
    let cache = std::fs::read_to_string(cmake_cache()).unwrap();
    let flags_of = |var: &str| -> String {
        cache.lines().find_map(|l| l.strip_prefix(&format!("{var}:STRING="))).unwrap_or_default().to_string()
    };
    let c_flags = flags_of("CMAKE_C_FLAGS");
    for flag in ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"] {
        assert!(c_flags.contains(flag), "CMAKE_C_FLAGS lacks {flag}: {c_flags}");
        assert!(flags_of("CMAKE_CXX_FLAGS").contains(flag), "CMAKE_CXX_FLAGS lacks {flag}");
    }
    assert!(cache.contains("GGML_NATIVE:BOOL=ON"), "native SIMD kept");
    let compiler = cache.lines().find_map(|l| l.strip_prefix("CMAKE_C_COMPILER:FILEPATH=")).unwrap_or("cc");
    let defines = |extra: &[&str]| -> String {
        let mut cmd = Command::new(compiler);
        cmd.args(c_flags.split_whitespace()).args(extra).args(["-dM", "-E", "-x", "c", "/dev/null"]);
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    };
    // Placed before -march=native as CMake orders them; an explicit -mno-* wins either way.
    let spr = defines(&["-march=sapphirerapids"]);
    assert!(spr.contains("__AVX512F__"), "the compiler knows Sapphire Rapids");
    assert!(!spr.contains("__AMX_"), "AMX macros defined despite the flags");
    let without =
        Command::new(compiler).args(["-march=sapphirerapids", "-dM", "-E", "-x", "c", "/dev/null"]).output().unwrap();
    assert!(String::from_utf8_lossy(&without.stdout).contains("__AMX_INT8__"), "the check can fail");
}

#[test]
fn eval_runs_from_a_directory_outside_the_checkout() {
    let hf = std::fs::canonicalize(common::default_model::hf_dir()).unwrap();
    let source = std::fs::canonicalize(common::default_model::gguf()).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let q8 = elsewhere.path().join("q8_0.gguf");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_microscale"))
            .current_dir(elsewhere.path())
            .env_remove("MICROSCALE_DATA")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    run(&["convert", "-q", hf.to_str().unwrap(), "-o", "q8_0.gguf", "--outtype", "q8_0"]);
    assert!(q8.exists());
    for model in [source.to_str().unwrap(), "q8_0.gguf"] {
        let text = run(&["eval", "-q", model, "--chunks", "1", "--task", "sst2", "--limit", "4", "--ppl"]);
        assert!(text.contains("Final estimate: PPL = "), "{text}");
        assert!(text.contains("sst2_acc"), "{text}");
    }
    // A data folder that lacks a file names the folder, the file and how to choose another.
    let out = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .current_dir(elsewhere.path())
        .args(["eval", "-q", "q8_0.gguf", "--task", "arc-easy", "--data-dir", "nowhere"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("nowhere/arc/ARC-Easy-Dev.jsonl") && err.contains("--data-dir") && err.contains("MICROSCALE_DATA"),
        "{err}"
    );
}
