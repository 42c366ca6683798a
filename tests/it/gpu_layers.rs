//! `--gpu-layers N`: llama.cpp's model parameters get N (the C struct llama.cpp's loader reads),
//! and eval's and bench's rows record the layers that really ran on a GPU: N where there is one, 0
//! where there is none (a CPU build, or a CUDA build on a machine without a GPU), said in one line.
//! Offloading itself is measured on a GPU machine (bench-results/gpu.md).

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
    let no_gpu = microscale::engine::info::gpu_devices().is_empty();
    let o = microscale(&["eval", m, "--chunks", "1", "-t", "2", "--gpu-layers", "3", "--csv", c]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    let warned: Vec<&str> = said.lines().filter(|l| l.contains("no GPU here")).collect();
    assert_eq!(warned.len(), usize::from(no_gpu), "{said}");
    assert!(warned.iter().all(|l| l.contains("--gpu-layers 3") && l.contains("running on the CPU")), "{said}");
    let o = microscale(&["bench", m, "--pp", "8", "--tg", "2", "--reps", "1", "--gpu-layers", "2", "--csv", c]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = csv_column(&csv, "gpu_layers");
    let (eval_ran, bench_ran) = if no_gpu { ("0", "0") } else { ("3", "2") };
    assert_eq!(got.first().map(String::as_str), Some(eval_ran), "eval's ppl row: {got:?}");
    assert_eq!(got.last().map(String::as_str), Some(bench_ran), "bench's rows: {got:?}");
    assert!(got.len() >= 3, "{got:?}");

    // A CSV written with other columns (an older microscale's) is refused, not misaligned.
    let old = tmp.path().join("old.csv");
    std::fs::write(&old, "model,sha256,metric,value\nx,y,ppl,1\n").unwrap();
    let o = microscale(&["eval", m, "--chunks", "1", "--csv", old.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("old.csv") && e.contains("other columns"), "{e}");
}

/// The CUDA build (`scripts/build-cuda.sh`, then `cargo test --features cuda-no-vmm` in its target
/// folder): it names its CUDA backend; on a machine without a GPU it starts, finds no device, and
/// every command asked for GPU layers runs on the CPU saying so, its rows recording 0; on a GPU
/// machine the layers are offloaded and recorded, and the perplexity is the CPU's.
#[cfg(feature = "cuda")]
#[test]
fn the_cuda_build_names_its_backend_and_runs_where_it_is() {
    let model = common::default_model::gguf();
    let m = model.to_str().unwrap();
    let info = microscale(&["info"]);
    let text = String::from_utf8_lossy(&info.stdout);
    let backends = text.lines().find(|l| l.starts_with("backends compiled in:")).unwrap_or_default();
    assert!(info.status.success() && backends.contains("CUDA") && backends.contains("CPU"), "{text}");
    let gpus = microscale::engine::info::gpu_devices();
    let ppl = |layers: &str| -> (f64, String, String) {
        let tmp = tempfile::tempdir().unwrap();
        let csv = tmp.path().join("rows.csv");
        let args = ["eval", m, "--chunks", "2", "--gpu-layers", layers, "--json", "--csv", csv.to_str().unwrap()];
        let o = microscale(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let recorded = csv_column(&csv, "gpu_layers").remove(0);
        (v["results"]["perplexity"]["ppl"].as_f64().unwrap(), recorded, String::from_utf8_lossy(&o.stderr).into())
    };
    let (cpu, cpu_layers, _) = ppl("0");
    let (offloaded, layers, said) = ppl("99");
    assert_eq!(cpu_layers, "0");
    if gpus.is_empty() {
        assert!(text.contains("GPU offload: none: no GPU device found"), "{text}");
        assert!(said.contains("finds no CUDA device") && said.contains("running on the CPU"), "{said}");
        assert_eq!((layers.as_str(), offloaded), ("0", cpu), "a CPU run, recorded as one");
        let o = microscale(&[
            "generate",
            m,
            "-p",
            "The capital of France is",
            "-n",
            "4",
            "--temp",
            "0",
            "--gpu-layers",
            "99",
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && e.contains("no GPU here"), "{e}");
    } else {
        assert!(text.contains("GPU offload: available: CUDA0"), "{text}");
        assert_eq!(layers, "99");
        // F32 sums in another order (cuBLAS, FlashAttention): the same model, within 0.5%.
        assert!((offloaded / cpu - 1.0).abs() < 5e-3, "GPU {offloaded} vs CPU {cpu}");
    }
}
