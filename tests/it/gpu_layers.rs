//! `--gpu-layers N`: llama.cpp's model parameters get N (the C struct llama.cpp's loader reads),
//! and eval's and bench's rows record it. No GPU here: offloading itself is untested (README).

use crate::common;

use microscale::engine::LoadOptions;
use microscale::record::rows::CSV_HEADER;
use std::path::Path;
use std::process::Command;

#[test]
fn the_flag_reaches_llama_cpp_model_params() {
    for n in [0, 1, 99] {
        for mmap in [true, false] {
            let p = LoadOptions { mmap, gpu_layers: n }.model_params();
            assert_eq!(p.n_gpu_layers(), n as i32);
            assert_eq!(p.use_mmap(), mmap);
        }
    }
    // A model loads with layers asked on the GPU: a CPU build keeps them on the CPU.
    let m = microscale::engine::Model::load_with(
        &common::default_model::gguf(),
        &LoadOptions { mmap: true, gpu_layers: 99 },
    );
    assert!(m.is_ok(), "{:?}", m.err());
}

fn csv_column(path: &Path, column: &str) -> Vec<String> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let header = rdr.headers().unwrap().clone();
    assert_eq!(header.iter().collect::<Vec<_>>().join(","), CSV_HEADER);
    let i = header.iter().position(|h| h == column).unwrap();
    rdr.records().map(|r| r.unwrap()[i].to_string()).collect()
}

fn microscale(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_microscale")).args(args).output().unwrap()
}

#[test]
fn eval_and_bench_rows_record_gpu_layers() {
    let model = common::default_model::gguf();
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("rows.csv");
    let (m, c) = (model.to_str().unwrap(), csv.to_str().unwrap());
    let o = microscale(&["eval", m, "--chunks", "1", "-t", "2", "--gpu-layers", "3", "--csv", c]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = microscale(&["bench", m, "--pp", "8", "--tg", "2", "--reps", "1", "--gpu-layers", "2", "--csv", c]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = csv_column(&csv, "gpu_layers");
    assert_eq!(got.first().map(String::as_str), Some("3"), "eval's ppl row: {got:?}");
    assert_eq!(got.last().map(String::as_str), Some("2"), "bench's rows: {got:?}");
    assert!(got.len() >= 3, "{got:?}");

    // A CSV written with other columns (an older microscale's) is refused, not misaligned.
    let old = tmp.path().join("old.csv");
    std::fs::write(&old, "model,sha256,metric,value\nx,y,ppl,1\n").unwrap();
    let o = microscale(&["eval", m, "--chunks", "1", "--csv", old.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("old.csv") && e.contains("other columns"), "{e}");
}
