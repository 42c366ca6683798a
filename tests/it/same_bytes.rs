//! The same GGUF bytes on every CPU: the default model converted by this build (x86-64 here, aarch64
//! when the tests run on a Pi) matches the digests checked in (tests/fixtures/default-model.sha256).
//! llama.cpp's C is built with -ffp-contract=off and microscale's float-to-int conversions follow the
//! engine's CPU, so no CPU rounds differently; tests/it/aarch64.rs checks the aarch64 build under qemu.

use crate::common;

use common::digests::{convert, expected, sha256_file};

#[test]
fn the_default_model_converts_to_the_checked_in_bytes() {
    let src = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for e in expected() {
        let out = tmp.path().join(format!("{}.gguf", e.name));
        convert(std::path::Path::new(env!("CARGO_BIN_EXE_microscale")), &src, &out, &e.args);
        let got = sha256_file(&out);
        if got != e.sha256 {
            wrong.push(format!("{} ({}): {got}, expected {}", e.name, e.args.join(" "), e.sha256));
        }
        std::fs::remove_file(&out).unwrap();
    }
    assert!(wrong.is_empty(), "on {}: {}", std::env::consts::ARCH, wrong.join("; "));
}
