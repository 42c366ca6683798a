//! Whole files: `convert --outtype TYPE` straight from the Hugging Face directory must give, tensor
//! by tensor, the same types and the same bytes as llama.cpp's own quantizer (`stock-quantize`)
//! applied to our F32 GGUF of the same model — with and without an importance matrix.

mod common;

use common::synth::{self, SynthSpec};
use microscale::convert::{convert, ConvertOptions};
use microscale::engine::quantize::{stock_quantize, StockOptions};
use microscale::gguf::imatrix::{Imatrix, ImatrixEntry};
use microscale::gguf::GgufFile;
use microscale::quant::mix::Scheme;
use std::collections::BTreeMap;
use std::path::Path;

/// name → (type, bytes) of every tensor in a GGUF.
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let f = GgufFile::open(path).unwrap();
    f.tensors.iter().map(|t| (t.name.clone(), (t.ggml_type.name().to_string(), f.tensor_data(t).to_vec()))).collect()
}

fn assert_same_as_stock(hf_dir: &Path, scheme: Scheme, imatrix: Option<&Imatrix>, work: &Path) {
    let f32_gguf = work.join("model-f32.gguf");
    if !f32_gguf.exists() {
        convert(hf_dir, &f32_gguf, &ConvertOptions::new(Scheme::F32)).unwrap();
    }
    let stock = work.join(format!("stock-{}.gguf", scheme.name()));
    stock_quantize(&f32_gguf, &stock, scheme, imatrix, &StockOptions { threads: 2, ..Default::default() }).unwrap();
    let ours = work.join(format!("ours-{}.gguf", scheme.name()));
    let mut opts = ConvertOptions::new(scheme);
    opts.imatrix = imatrix.cloned();
    convert(hf_dir, &ours, &opts).unwrap();

    let (a, b) = (tensors(&ours), tensors(&stock));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{scheme:?}: tensor names");
    let mut quantized = 0;
    for (name, (ty, bytes)) in &a {
        let (sty, sbytes) = &b[name];
        assert_eq!(ty, sty, "{scheme:?}: type of {name}");
        assert!(bytes == sbytes, "{scheme:?}: bytes of {name} ({ty}) differ");
        quantized += usize::from(ty != "f32");
    }
    assert!(quantized > 0, "{scheme:?}: nothing was quantized");
    std::fs::remove_file(stock).unwrap();
    std::fs::remove_file(ours).unwrap();
}

/// An importance matrix for every 2-D weight: positive, varying over columns, some zeros.
fn synthetic_imatrix(f32_gguf: &Path) -> Imatrix {
    let f = GgufFile::open(f32_gguf).unwrap();
    let mut m = Imatrix { datasets: vec!["synthetic".into()], chunk_count: 1, chunk_size: 512, ..Default::default() };
    for t in f.tensors.iter().filter(|t| t.ne.len() == 2 && t.name.starts_with("blk.")) {
        let ne0 = t.ne[0] as usize;
        let sums = (0..ne0).map(|i| if i % 17 == 5 { 0.0 } else { 1.0 + ((i * 7919) % 101) as f32 * 0.37 }).collect();
        m.entries.insert(t.name.clone(), ImatrixEntry { sums, counts: vec![10.0] });
    }
    m
}

#[test]
fn synthetic_llama_with_k_quant_friendly_shapes() {
    // Every row length a multiple of 256, so K-quants apply everywhere; 8 layers exercise the
    // use_more_bits pattern of q4_k_m.
    let spec =
        SynthSpec { n_layer: 8, n_embd: 256, n_head: 4, n_head_kv: 2, n_ff: 512, seed: 21, ..SynthSpec::tiny_llama() };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    std::fs::create_dir(&dir).unwrap();
    synth::write_llama_checkpoint(&dir, &spec).unwrap();
    for scheme in [Scheme::Q8_0, Scheme::Q4KM, Scheme::Q4KS, Scheme::Q5KM, Scheme::Q6K, Scheme::Q4_0, Scheme::Q5_1] {
        assert_same_as_stock(&dir, scheme, None, tmp.path());
    }
    let imatrix = synthetic_imatrix(&tmp.path().join("model-f32.gguf"));
    for scheme in [Scheme::Q4KM, Scheme::Q4_0, Scheme::Q5_0] {
        assert_same_as_stock(&dir, scheme, Some(&imatrix), tmp.path());
    }
}

#[test]
fn default_model_matches_stock_quants() {
    let hf = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    for scheme in [Scheme::Q8_0, Scheme::Q4KM, Scheme::Q4KS] {
        assert_same_as_stock(&hf, scheme, None, tmp.path());
    }
}
