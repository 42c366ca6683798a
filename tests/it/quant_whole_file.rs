//! Whole files: `convert --outtype TYPE` straight from the Hugging Face directory must give, tensor
//! by tensor, the same types and the same bytes as llama.cpp's own quantizer (`stock-quantize`)
//! applied to our F32 GGUF of the same model — with and without an importance matrix.

use crate::common;

use common::synth::{self, SynthSpec};
use microscale::convert::{convert, ConvertOptions};
use microscale::engine::quantize::{stock_quantize, StockOptions};
use microscale::gguf::imatrix::{Imatrix, ImatrixEntry};
use microscale::gguf::GgufFile;
use microscale::quant::mix::{MixFlags, Scheme};
use microscale::quant::GgmlType;
use std::collections::BTreeMap;
use std::path::Path;

/// name → (type, bytes) of every tensor in a GGUF.
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let f = GgufFile::open(path).unwrap();
    f.tensors.iter().map(|t| (t.name.clone(), (t.ggml_type.name().to_string(), f.tensor_data(t).to_vec()))).collect()
}

/// Quantize with llama.cpp and with microscale (same scheme, imatrix and flags) and require the
/// same file. Where llama.cpp refuses (an imatrix it requires is missing), microscale must refuse
/// too, naming the missing importance matrix, and write nothing. Returns whether both quantized.
fn assert_same_as_stock(hf_dir: &Path, scheme: Scheme, imatrix: Option<&Imatrix>, work: &Path) -> bool {
    assert_same_as_stock_with(hf_dir, scheme, imatrix, &MixFlags::default(), work)
}

fn assert_same_as_stock_with(
    hf_dir: &Path,
    scheme: Scheme,
    imatrix: Option<&Imatrix>,
    flags: &MixFlags,
    work: &Path,
) -> bool {
    let f32_gguf = work.join("model-f32.gguf");
    if !f32_gguf.exists() {
        convert(hf_dir, &f32_gguf, &ConvertOptions::new(Scheme::F32)).unwrap();
    }
    let stock = work.join(format!("stock-{}.gguf", scheme.name()));
    let sopts = StockOptions { threads: 2, mix_flags: flags.clone(), ..Default::default() };
    let stock_result = stock_quantize(&f32_gguf, &stock, scheme, imatrix, &sopts);
    let ours = work.join(format!("ours-{}.gguf", scheme.name()));
    let mut opts = ConvertOptions::new(scheme);
    opts.imatrix = imatrix.cloned();
    opts.mix_flags = flags.clone();
    let our_result = convert(hf_dir, &ours, &opts);
    if stock_result.is_err() {
        let e = format!("{:#}", our_result.expect_err(&format!("{scheme:?}: llama.cpp refused, microscale did not")));
        assert!(e.contains("importance matrix") || e.contains("importance weights"), "{scheme:?}: {e}");
        assert!(!ours.exists() && !stock.exists(), "{scheme:?}: a refused quantization left a file");
        return false;
    }
    our_result.unwrap();
    let (fa, fb) = (GgufFile::open(&ours).unwrap(), GgufFile::open(&stock).unwrap());
    for (k, v) in fb.metadata.iter().filter(|(k, _)| k.starts_with("quantize.") || k == "general.file_type") {
        assert_eq!(fa.get(k), Some(v), "{scheme:?}: key {k}");
    }
    let ours_keys: Vec<&String> = fa.metadata.iter().map(|(k, _)| k).filter(|k| k.starts_with("quantize.")).collect();
    let stock_keys: Vec<&String> = fb.metadata.iter().map(|(k, _)| k).filter(|k| k.starts_with("quantize.")).collect();
    assert_eq!(ours_keys, stock_keys, "{scheme:?}: quantize.* keys");

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
    true
}

/// Every quantized mix llama-quantize offers.
fn quantized_schemes() -> impl Iterator<Item = Scheme> {
    Scheme::ALL.iter().copied().filter(|s| !s.is_float())
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
    // 8 heads over 2 KV heads: n_gqa 4, which changes attn_v in the low-bit mixes; untied (as tiny_llama
    // is), so output.weight and token_embd.weight follow their own rules.
    let spec =
        SynthSpec { n_layer: 8, n_embd: 256, n_head: 8, n_head_kv: 2, n_ff: 512, seed: 21, ..SynthSpec::tiny_llama() };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    std::fs::create_dir(&dir).unwrap();
    synth::write_llama_checkpoint(&dir, &spec).unwrap();
    // Without an imatrix: every mix that llama.cpp writes without one, and its refusal of the rest.
    let refused: Vec<Scheme> =
        quantized_schemes().filter(|&s| !assert_same_as_stock(&dir, s, None, tmp.path())).collect();
    use Scheme::*;
    assert_eq!(refused, vec![Q2KS, IQ1S, IQ1M, IQ2XXS, IQ2XS, IQ2S, IQ2M, IQ3XXS, IQ3XS]);
    // With one: every mix.
    let imatrix = synthetic_imatrix(&tmp.path().join("model-f32.gguf"));
    for scheme in quantized_schemes() {
        assert!(assert_same_as_stock(&dir, scheme, Some(&imatrix), tmp.path()), "{scheme:?}");
    }
    // llama-quantize's per-file flags.
    let flags = [
        MixFlags {
            output_tensor_type: Some(GgmlType::Q8_0),
            token_embedding_type: Some(GgmlType::Q4K),
            ..Default::default()
        },
        MixFlags { leave_output_tensor: true, ..Default::default() },
        MixFlags { pure: true, ..Default::default() },
    ];
    for f in &flags {
        for scheme in [Q4KM, IQ2M, Q3KL] {
            assert!(assert_same_as_stock_with(&dir, scheme, Some(&imatrix), f, tmp.path()), "{scheme:?} {f:?}");
        }
    }
}

#[test]
fn default_model_matches_stock_quants() {
    let hf = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    for scheme in [Scheme::Q8_0, Scheme::Q4KM, Scheme::Q4KS] {
        assert!(assert_same_as_stock(&hf, scheme, None, tmp.path()));
    }
    // SmolLM2's 576-wide rows are not whole 256-blocks: every family of low-bit mix falls back
    // (IQ types to IQ4_NL, Q2_K/Q3_K/TQ to Q4_0, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0). One
    // mix per family, with a real importance matrix from `microscale imatrix` (all mixes are
    // checked on the synthetic model above; each IQ mix of this model takes half a minute).
    let imatrix_path = tmp.path().join("imatrix.gguf");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(["-q", "imatrix", hf.to_str().unwrap(), "-o", imatrix_path.to_str().unwrap(), "--chunks", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imatrix = Imatrix::load(&imatrix_path).unwrap();
    use Scheme::*;
    for scheme in [Q2KS, Q3KL, IQ1M, IQ2XXS, IQ3XS, IQ4XS, TQ1_0] {
        assert!(assert_same_as_stock(&hf, scheme, Some(&imatrix), tmp.path()), "{scheme:?}");
    }
}

/// The checkpoint's bytes read past the page cache (`O_DIRECT`, the default where the file system
/// takes it) and through the memory map (`MICROSCALE_DIRECT_IO=0`) give the same file, from a
/// sharded BF16 checkpoint whose tensors start at offsets that are not block-aligned.
#[test]
fn direct_reads_and_the_memory_map_give_the_same_file() {
    use microscale::source::{HfCheckpoint, TensorSource};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = SynthSpec { n_embd: 256, n_ff: 512, dtype: synth::SynthDtype::BF16, seed: 3, ..SynthSpec::tiny_llama() };
    synth::write_sharded_llama_checkpoint(&dir, &spec, 2).unwrap();
    let ckpt = HfCheckpoint::open(&dir).unwrap();
    let name = &ckpt.tensors()[1].name;
    assert!(ckpt.reads_direct(name), "{}: O_DIRECT refused here, so the direct path would go untested", dir.display());
    let mut outputs = vec![];
    for (tag, direct) in [("direct", "1"), ("mapped", "0")] {
        for outtype in ["q4_k_m", "f16"] {
            let out = tmp.path().join(format!("{tag}-{outtype}.gguf"));
            let status = std::process::Command::new(env!("CARGO_BIN_EXE_microscale"))
                .args(["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "--outtype", outtype, "-q"])
                .env("MICROSCALE_DIRECT_IO", direct)
                .status()
                .unwrap();
            assert!(status.success(), "{tag} {outtype}");
            outputs.push(std::fs::read(&out).unwrap());
        }
    }
    assert!(outputs[0] == outputs[2], "q4_k_m: direct and mapped reads differ");
    assert!(outputs[1] == outputs[3], "f16: direct and mapped reads differ");
}
