//! Sequential calibration (`--sequential K`): stage s's statistics must be those of the model whose
//! blocks before group s are compressed exactly as in the output and whose later blocks are not.
//! The test builds that model itself — the output's tensors for the earlier blocks (and the
//! embeddings and head), the uncompressed F32 conversion's for the rest — calibrates it one-shot
//! through llama.cpp, and requires the sequential calibration's entries for group s to equal it to
//! the bit, those of block 0 to equal the one-shot calibration's, and the output to be converted
//! with them.

use crate::common;

use common::synth::{self, SynthSpec};
use microscale::calib::{calibrate, CalibModel, CalibOptions, Calibration, MomentsRequest};
use microscale::convert::{convert, ConvertOptions};
use microscale::gguf::{GgufFile, GgufWriter};
use microscale::prune::unstructured::SparsityMethod;
use microscale::prune::PruneSpec;
use microscale::quant::gptq::QuantMethod;
use microscale::quant::mix::Scheme;
use microscale::util::tensor_name::block_of as layer_of;
use std::path::Path;

const N_LAYER: usize = 3;

fn checkpoint(work: &Path) -> std::path::PathBuf {
    let dir = work.join("llama");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = SynthSpec { n_layer: N_LAYER, seed: 5, ..SynthSpec::tiny_llama() };
    synth::write_llama_checkpoint(&dir, &spec).unwrap();
    dir
}

/// The model a stage runs: blocks before `first_open` (and the non-block tensors) from
/// `compressed`, the others from `uncompressed`.
fn stage_model(compressed: &GgufFile, uncompressed: &GgufFile, first_open: usize, path: &Path) {
    let pick = |name: &str| if layer_of(name).is_some_and(|l| l >= first_open) { uncompressed } else { compressed };
    let headers = uncompressed.tensors.iter().map(|t| pick(&t.name).tensor(&t.name).unwrap().clone()).collect();
    let mut w = GgufWriter::create(path, &uncompressed.metadata, headers).unwrap();
    for t in &uncompressed.tensors {
        let from = pick(&t.name);
        w.write_tensor(&t.name, from.tensor_data(from.tensor(&t.name).unwrap())).unwrap();
    }
    w.finish().unwrap();
}

/// Calibrate `model` one-shot over the chunks `like` was made with, collecting the moments of
/// `layers` when `moments`.
fn calibrate_like(
    model: &Path,
    like: &Calibration,
    spec: &PruneSpec,
    layers: std::ops::Range<usize>,
    moments: bool,
    out: &Path,
) -> Calibration {
    let copts = CalibOptions {
        text: spec.calib_text_path().unwrap(),
        chunks: like.imatrix.chunk_count as usize,
        n_ctx: like.imatrix.chunk_size as usize,
        threads: 2,
        moments: moments.then(|| MomentsRequest {
            path: out.to_path_buf(),
            per_block: vec![1; N_LAYER],
            budget: 1 << 30,
            layers,
        }),
    };
    calibrate(CalibModel::File(model), &like.fingerprint, N_LAYER, &copts, true).unwrap()
}

fn entries_of(c: &Calibration, layer: usize) -> Vec<(&String, &microscale::gguf::imatrix::ImatrixEntry)> {
    c.imatrix.entries.iter().filter(|(n, _)| layer_of(n) == Some(layer)).collect()
}

/// Every weight of `layer` with its input's moments: (name, Σxxᵀ).
fn moments_of(c: &Calibration, layer: usize) -> Vec<(String, Vec<f64>)> {
    let m = c.moments.as_ref().expect("second moments");
    entries_of(c, layer)
        .into_iter()
        .map(|(name, e)| (name.clone(), m.get(name, e.counts[0] as f64).unwrap().xtx))
        .collect()
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1e-30);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

#[test]
fn each_stage_is_calibrated_on_the_blocks_before_it_as_the_output_compresses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path());
    let f32_gguf = tmp.path().join("f32.gguf");
    convert(&dir, &f32_gguf, &ConvertOptions::new(Scheme::F32)).unwrap();
    let uncompressed = GgufFile::open(&f32_gguf).unwrap();
    // SparseGPT (second moments) on Q8_0, Wanda (the imatrix alone), GPTQ on Q4_0.
    let cases: [(&str, Scheme, Option<SparsityMethod>, QuantMethod, bool); 3] = [
        ("sparsegpt", Scheme::Q8_0, Some(SparsityMethod::Sparsegpt), QuantMethod::Rtn, true),
        ("wanda", Scheme::Q8_0, Some(SparsityMethod::Wanda), QuantMethod::Rtn, false),
        ("gptq", Scheme::Q4_0, None, QuantMethod::Gptq, true),
    ];
    for (tag, scheme, method, quant_method, has_moments) in cases {
        let one_shot_path = tmp.path().join(format!("{tag}.calib.gguf"));
        let mut prune = PruneSpec {
            calib_chunks: 2,
            calib: Some(one_shot_path.clone()),
            sequential: N_LAYER,
            ..Default::default()
        };
        if let Some(m) = method {
            (prune.sparsity, prune.method) = (Some(0.5), m);
        }
        let opts = ConvertOptions { prune, quant_method, ..ConvertOptions::new(scheme) };
        let out = tmp.path().join(format!("{tag}.gguf"));
        convert(&dir, &out, &opts).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".sequential"))
            .collect();
        assert!(leftovers.is_empty(), "{tag}: the scratch directory is removed");

        // The sequential calibration, rebuilt as convert made it; --calib kept its one-shot stage.
        let seq = microscale::convert::sequential::calibration(&dir, &out.with_extension("again.gguf"), &opts).unwrap();
        let one_shot = Calibration::load(&one_shot_path, &seq.fingerprint).unwrap();
        // The output is the conversion with the sequential calibration.
        let again = tmp.path().join(format!("{tag}-again.gguf"));
        let stage = microscale::convert::StageState { calibration: Some(seq.clone()), ..Default::default() };
        convert(&dir, &again, &ConvertOptions { stage, ..opts.clone() }).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap(), "{tag}: output");
        let compressed = GgufFile::open(&out).unwrap();

        assert_eq!(entries_of(&seq, 0), entries_of(&one_shot, 0), "{tag}: block 0 is calibrated one-shot");
        if has_moments {
            assert_eq!(moments_of(&seq, 0), moments_of(&one_shot, 0), "{tag}: block 0's moments");
        }
        for s in 1..N_LAYER {
            let model = tmp.path().join(format!("{tag}-stage{s}.gguf"));
            stage_model(&compressed, &uncompressed, s, &model);
            let want = calibrate_like(
                &model,
                &one_shot,
                &opts.prune,
                s..s + 1,
                has_moments,
                &model.with_extension("calib.gguf"),
            );
            assert!(!entries_of(&want, s).is_empty());
            assert_eq!(entries_of(&seq, s), entries_of(&want, s), "{tag}: block {s}'s imatrix");
            let (a, b) = (&entries_of(&seq, s)[0].1.sums, &entries_of(&one_shot, s)[0].1.sums);
            let d = max_rel_diff(
                &a.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                &b.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            );
            assert!(d > 1e-4, "{tag}: block {s}'s statistics differ from one-shot ({d})");
            if has_moments {
                assert_eq!(moments_of(&seq, s), moments_of(&want, s), "{tag}: block {s}'s moments");
            }
        }
    }
}

#[test]
fn impossible_sequential_requests_are_refused_before_calibrating() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path());
    type Edit = Box<dyn Fn(&mut PruneSpec)>;
    let cases: [(&str, Edit, &str); 3] = [
        (
            "too many stages",
            Box::new(|s| (s.sequential, s.sparsity, s.method) = (N_LAYER + 1, Some(0.5), SparsityMethod::Wanda)),
            "only 3 blocks",
        ),
        ("magnitude", Box::new(|s| (s.sequential, s.sparsity) = (2, Some(0.5))), "calibrated method"),
        (
            "structured",
            Box::new(|s| (s.sequential, s.prune_ffn, s.method) = (2, Some(0.5), SparsityMethod::Wanda)),
            "not to removing",
        ),
    ];
    for (tag, f, want) in cases {
        let mut prune = PruneSpec { calib_chunks: 2, ..Default::default() };
        f(&mut prune);
        let out = tmp.path().join(format!("{tag}.gguf"));
        let err = convert(&dir, &out, &ConvertOptions { prune, ..ConvertOptions::new(Scheme::Q8_0) }).unwrap_err();
        assert!(format!("{err:#}").contains(want), "{tag}: {err:#}");
        assert!(!out.exists(), "{tag}: nothing written");
    }
}
