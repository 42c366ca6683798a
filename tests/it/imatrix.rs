//! `microscale imatrix` against llama.cpp's own llama-imatrix (built from the llama.cpp of the
//! llama-cpp-python 0.3.36 sdist by scripts/build-llama-tools.sh): the same entries, the same token
//! counts and the same sums (to float rounding) for the same text, chunks and context; the file is
//! accepted by llama-quantize, which records it in the quantize.imatrix.* keys exactly as our
//! conversion does; merging adds up; `convert --calib` without pruning makes and uses one.

use crate::common;

use microscale::gguf::imatrix::Imatrix;
use microscale::gguf::GgufFile;
use std::path::{Path, PathBuf};
use std::process::Command;

fn microscale(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_microscale")).args(args).output().unwrap();
    assert!(out.status.success(), "microscale {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn run(tool: &Path, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}\n{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// About 40 KB of WikiText-2 validation text: enough for a few chunks.
fn calibration_text(dir: &Path) -> PathBuf {
    let data = microscale::util::data::DataDir::resolve(None);
    let text = std::fs::read_to_string(data.file(microscale::util::data::CALIB_TEXT).unwrap()).unwrap();
    let cut = text.char_indices().nth(40_000).map_or(text.len(), |(i, _)| i);
    let path = dir.join("calib.txt");
    std::fs::write(&path, &text[..cut]).unwrap();
    path
}

/// Entry by entry: the same names, token counts exactly, and sums to float rounding (ours add in
/// f64, llama-imatrix in f32, and the two llama.cpp versions' kernels round differently).
fn assert_same_imatrix(ours: &Imatrix, theirs: &Imatrix) {
    assert_eq!(ours.entries.keys().collect::<Vec<_>>(), theirs.entries.keys().collect::<Vec<_>>());
    assert_eq!(ours.chunk_count, theirs.chunk_count);
    assert_eq!(ours.chunk_size, theirs.chunk_size);
    assert_eq!(ours.datasets, theirs.datasets);
    for (name, a) in &ours.entries {
        let b = &theirs.entries[name];
        assert_eq!(a.counts, b.counts, "{name}: token counts");
        assert_eq!(a.sums.len(), b.sums.len(), "{name}");
        let scale = b.sums.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
        for (i, (x, y)) in a.sums.iter().zip(&b.sums).enumerate() {
            let tol = 2e-3 * y.abs() + 1e-5 * scale;
            assert!((x - y).abs() <= tol, "{name}[{i}]: ours {x}, llama-imatrix {y}");
        }
    }
}

#[test]
fn imatrix_matches_llama_imatrix_and_llama_quantize_accepts_it() {
    let tools = common::llama_tools::dir();
    let tmp = tempfile::tempdir().unwrap();
    let text = calibration_text(tmp.path());
    let text_arg = text.to_str().unwrap();
    let hf = common::default_model::hf_dir();
    let f32_gguf = tmp.path().join("f32.gguf");
    microscale(&["-q", "convert", hf.to_str().unwrap(), "-o", f32_gguf.to_str().unwrap(), "--outtype", "f32"]);

    let reference = tmp.path().join("reference.gguf");
    run(
        &tools.join("llama-imatrix"),
        &["-m", f32_gguf.to_str().unwrap(), "-f", text_arg, "-o", reference.to_str().unwrap()]
            .iter()
            .chain(&["--chunks", "3", "-c", "128", "-b", "128", "-t", "2", "--no-ppl"])
            .copied()
            .collect::<Vec<_>>(),
    );
    let theirs = Imatrix::load(&reference).unwrap();
    assert!(theirs.entries.len() >= 30 * 7, "llama-imatrix wrote {} entries", theirs.entries.len());

    // From the Hugging Face directory (built by llama.cpp from the plan) and from the GGUF.
    for (i, model) in [hf.as_path(), f32_gguf.as_path()].into_iter().enumerate() {
        let ours_path = tmp.path().join(format!("ours-{i}.gguf"));
        let model = model.to_str().unwrap();
        microscale(&[
            "-q",
            "imatrix",
            model,
            "-f",
            text_arg,
            "-o",
            ours_path.to_str().unwrap(),
            "--chunks",
            "3",
            "-c",
            "128",
        ]);
        assert_same_imatrix(&Imatrix::load(&ours_path).unwrap(), &theirs);
    }

    // llama-quantize reads our file and records it; our conversion records it the same way.
    let ours = tmp.path().join("ours-0.gguf");
    let stock = tmp.path().join("stock-iq3_m.gguf");
    let ours_arg = ours.to_str().unwrap();
    run(
        &tools.join("llama-quantize"),
        &["--imatrix", ours_arg, f32_gguf.to_str().unwrap(), stock.to_str().unwrap(), "IQ3_M", "2"],
    );
    let converted = tmp.path().join("ours-iq3_m.gguf");
    microscale(&[
        "-q",
        "convert",
        hf.to_str().unwrap(),
        "-o",
        converted.to_str().unwrap(),
        "--outtype",
        "iq3_m",
        "--imatrix",
        ours_arg,
    ]);
    let (a, b) = (GgufFile::open(&converted).unwrap(), GgufFile::open(&stock).unwrap());
    let keys = |f: &GgufFile| -> Vec<(String, String)> {
        f.metadata
            .iter()
            .filter(|(k, _)| k.starts_with("quantize."))
            .map(|(k, v)| (k.clone(), format!("{v:?}")))
            .collect()
    };
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(keys(&a).len(), 4, "{:?}", keys(&a));
    let types = |f: &GgufFile| -> std::collections::BTreeMap<String, String> {
        f.tensors.iter().map(|t| (t.name.clone(), t.ggml_type.name().to_string())).collect()
    };
    assert_eq!(types(&a), types(&b), "tensor types differ from llama-quantize's");
}

#[test]
fn merging_adds_up_and_convert_calib_makes_and_uses_an_imatrix() {
    let tmp = tempfile::tempdir().unwrap();
    let text = calibration_text(tmp.path());
    let hf = common::default_model::hf_dir();
    let (hf_arg, text_arg) = (hf.to_str().unwrap(), text.to_str().unwrap());
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    microscale(&["-q", "imatrix", hf_arg, "-f", text_arg, "-o", &p("a.gguf"), "--chunks", "2", "-c", "128"]);
    microscale(&["-q", "imatrix", hf_arg, "-f", text_arg, "-o", &p("b.gguf"), "--chunks", "1", "-c", "256"]);
    microscale(&["-q", "imatrix", "--in-file", &p("a.gguf"), "--in-file", &p("b.gguf"), "-o", &p("ab.gguf")]);
    let (a, b, ab) = (
        Imatrix::load(Path::new(&p("a.gguf"))).unwrap(),
        Imatrix::load(Path::new(&p("b.gguf"))).unwrap(),
        Imatrix::load(Path::new(&p("ab.gguf"))).unwrap(),
    );
    assert_eq!(ab.datasets.len(), 2);
    assert_eq!(ab.chunk_count, 4, "512 tokens per entry over 128-token chunks");
    for (name, e) in &ab.entries {
        let (x, y) = (&a.entries[name], &b.entries[name]);
        assert_eq!(e.counts[0], x.counts[0] + y.counts[0], "{name}");
        for i in 0..e.sums.len() {
            assert_eq!(e.sums[i], x.sums[i] + y.sums[i], "{name}[{i}]");
        }
    }
    // Statistics: one line per entry, totals recomputed here from the sums.
    let out = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(["imatrix", "--in-file", &p("a.gguf"), "--show-statistics", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats.len(), a.entries.len());
    for s in &stats {
        let e = &a.entries[s["tensor"].as_str().unwrap()];
        let total: f64 = e.sums.iter().map(|x| (*x / e.counts[0]) as f64).sum();
        let got = s["total"].as_f64().unwrap();
        assert!((got - total).abs() <= 1e-3 * total.abs().max(1e-6), "{s}: total {got} vs {total}");
    }

    // convert --calib FILE, no pruning: calibrates, saves FILE, and quantizes with it — the same
    // bytes as convert --imatrix FILE.
    let calib = p("calib.gguf");
    let q_calib = p("q-calib.gguf");
    microscale(&[
        "-q",
        "convert",
        hf_arg,
        "-o",
        &q_calib,
        "--outtype",
        "q4_k_m",
        "--calib",
        &calib,
        "--calib-text",
        text_arg,
        "--calib-chunks",
        "2",
    ]);
    assert!(Path::new(&calib).is_file(), "--calib did not save the calibration");
    let q_imatrix = p("q-imatrix.gguf");
    microscale(&["-q", "convert", hf_arg, "-o", &q_imatrix, "--outtype", "q4_k_m", "--imatrix", &calib]);
    let plain = p("q-plain.gguf");
    microscale(&["-q", "convert", hf_arg, "-o", &plain, "--outtype", "q4_k_m"]);
    let data = |f: &str| {
        let g = GgufFile::open(Path::new(f)).unwrap();
        g.tensors.iter().map(|t| g.tensor_data(t).to_vec()).collect::<Vec<_>>()
    };
    assert!(data(&q_calib) == data(&q_imatrix), "--calib and --imatrix of the same file quantize differently");
    assert!(data(&q_calib) != data(&plain), "the calibration did not change the quantization");
    let g = GgufFile::open(Path::new(&q_calib)).unwrap();
    assert_eq!(g.get("quantize.imatrix.file").and_then(|v| v.as_str()), Some(calib.as_str()));
}
