//! The bad-input suite: real files (a converted GGUF, its safetensors checkpoint and config.json,
//! an imatrix in both formats), mutated field by field — counts, lengths, type tags, offsets and
//! dimensions set to 0, 1, 2^31, 2^32, 2^62, 2^64−1 and neighbours of their true value — plus
//! byte flips and truncations. Every case is run through the real binary and must end in exit 0
//! or in exactly one `error:` line with exit 1 or 2: never a panic, a signal, a hang, or an
//! output left behind.

mod common;

use common::synth::{self, SynthSpec};
use microscale::gguf::imatrix::{Imatrix, ImatrixEntry};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const EXTREMES: [u64; 6] = [0, 1, 1 << 31, 1 << 32, 1 << 62, u64::MAX];
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// One mutated input: the bytes of the file it replaces and the commands that read it.
struct Case {
    class: &'static str,
    what: String,
    /// File name inside the case's directory, and its bytes.
    file: &'static str,
    bytes: Vec<u8>,
}

use microscale::util::rng::XorShift64;

// ---------------------------------------------------------------------------------------------
// An independent walk over a GGUF header: where each count, length, tag, dimension and offset is.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Width {
    U32,
    U64,
}

#[derive(Clone, Debug)]
struct Field {
    at: usize,
    width: Width,
    name: String,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The header fields of a well-formed GGUF, in file order, and where the header ends.
fn gguf_fields(b: &[u8]) -> (Vec<Field>, usize) {
    let mut f = Vec::new();
    let mut push = |at: usize, width: Width, name: String| f.push(Field { at, width, name });
    push(4, Width::U32, "version".into());
    push(8, Width::U64, "n_tensors".into());
    push(16, Width::U64, "n_kv".into());
    let n_tensors = u64_at(b, 8);
    let n_kv = u64_at(b, 16);
    let mut pos = 24;
    fn scalar_size(tag: u32) -> usize {
        match tag {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            _ => panic!("tag {tag}"),
        }
    }
    for i in 0..n_kv {
        let klen = u64_at(b, pos) as usize;
        let key = String::from_utf8_lossy(&b[pos + 8..pos + 8 + klen]).into_owned();
        push(pos, Width::U64, format!("kv{i} {key}: key length"));
        pos += 8 + klen;
        let tag = u32_at(b, pos);
        push(pos, Width::U32, format!("kv{i} {key}: type tag"));
        pos += 4;
        match tag {
            8 => {
                push(pos, Width::U64, format!("kv{i} {key}: string length"));
                pos += 8 + u64_at(b, pos) as usize;
            }
            9 => {
                let elem = u32_at(b, pos);
                push(pos, Width::U32, format!("kv{i} {key}: array element tag"));
                let n = u64_at(b, pos + 4);
                push(pos + 4, Width::U64, format!("kv{i} {key}: array length"));
                pos += 12;
                for j in 0..n {
                    if elem == 8 {
                        if j == 0 {
                            push(pos, Width::U64, format!("kv{i} {key}: first string length"));
                        }
                        pos += 8 + u64_at(b, pos) as usize;
                    } else {
                        pos += scalar_size(elem);
                    }
                }
            }
            t => {
                if scalar_size(t) >= 4 {
                    push(pos, if scalar_size(t) == 8 { Width::U64 } else { Width::U32 }, format!("kv{i} {key}: value"));
                }
                pos += scalar_size(t);
            }
        }
    }
    for i in 0..n_tensors {
        let nlen = u64_at(b, pos) as usize;
        let name = String::from_utf8_lossy(&b[pos + 8..pos + 8 + nlen]).into_owned();
        push(pos, Width::U64, format!("tensor{i} {name}: name length"));
        pos += 8 + nlen;
        let n_dims = u32_at(b, pos);
        push(pos, Width::U32, format!("tensor{i} {name}: n_dims"));
        pos += 4;
        for d in 0..n_dims {
            push(pos, Width::U64, format!("tensor{i} {name}: ne[{d}]"));
            pos += 8;
        }
        push(pos, Width::U32, format!("tensor{i} {name}: type"));
        pos += 4;
        push(pos, Width::U64, format!("tensor{i} {name}: offset"));
        pos += 8;
    }
    (f, pos)
}

fn set_field(b: &[u8], field: &Field, v: u64) -> Option<Vec<u8>> {
    let mut out = b.to_vec();
    match field.width {
        Width::U32 => {
            let v = u32::try_from(v).ok()?;
            out[field.at..field.at + 4].copy_from_slice(&v.to_le_bytes());
        }
        Width::U64 => out[field.at..field.at + 8].copy_from_slice(&v.to_le_bytes()),
    }
    (out != b).then_some(out)
}

/// Values to try in a field: the extremes, neighbours of its value, and for type tags every tag.
fn values_for(b: &[u8], field: &Field) -> Vec<u64> {
    let current = match field.width {
        Width::U32 => u32_at(b, field.at) as u64,
        Width::U64 => u64_at(b, field.at),
    };
    let mut v: Vec<u64> = EXTREMES.to_vec();
    v.extend([current.wrapping_add(1), current.wrapping_sub(1), current.wrapping_mul(2), u32::MAX as u64]);
    if field.name.ends_with("tag") || field.name.ends_with(": type") {
        v.extend((0..14).chain([16, 20, 24, 29, 30, 31, 39, 40]));
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn gguf_cases(class: &'static str, file: &'static str, bytes: &[u8], seed: u64) -> Vec<Case> {
    let (fields, header_end) = gguf_fields(bytes);
    let mut cases = Vec::new();
    for f in &fields {
        for v in values_for(bytes, f) {
            if let Some(m) = set_field(bytes, f, v) {
                cases.push(Case { class, what: format!("{} = {v}", f.name), file, bytes: m });
            }
        }
    }
    let mut rng = XorShift64::new(seed);
    // Byte flips: in the header (where the structure is) and in the data.
    for i in 0..160 {
        let at = if i % 4 == 3 { rng.next_u64() as usize % bytes.len() } else { rng.next_u64() as usize % header_end };
        let mut m = bytes.to_vec();
        m[at] ^= 1 << (rng.next_u64() % 8);
        cases.push(Case { class, what: format!("byte {at} flipped"), file, bytes: m });
    }
    // Truncations: at every field boundary and in the data.
    let mut cuts: Vec<usize> = fields.iter().flat_map(|f| [f.at, f.at + 2]).collect();
    cuts.extend([0, 3, header_end, header_end + 1, bytes.len() / 2, bytes.len() - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    for at in cuts.into_iter().step_by(2) {
        cases.push(Case { class, what: format!("truncated at {at}"), file, bytes: bytes[..at].to_vec() });
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// safetensors and config.json
// ---------------------------------------------------------------------------------------------

fn safetensors_cases(bytes: &[u8]) -> Vec<Case> {
    let class = "safetensors";
    let file = "model.safetensors";
    let n = u64_at(bytes, 0) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let with_header = |h: &serde_json::Value| {
        let text = serde_json::to_vec(h).unwrap();
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(data);
        out
    };
    let mut cases = Vec::new();
    for v in EXTREMES.into_iter().chain([n as u64 - 1, n as u64 + 1, bytes.len() as u64]) {
        let mut m = bytes.to_vec();
        m[..8].copy_from_slice(&v.to_le_bytes());
        cases.push(Case { class, what: format!("header length = {v}"), file, bytes: m });
    }
    let names: Vec<String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    for name in names.iter().step_by(3) {
        for dtype in ["F64", "I8", "BOOL", "U8", "XX"] {
            let mut h = header.clone();
            h[name]["dtype"] = dtype.into();
            cases.push(Case { class, what: format!("{name}: dtype {dtype}"), file, bytes: with_header(&h) });
        }
        let dims = header[name]["shape"].as_array().unwrap().len();
        for d in 0..dims {
            for v in EXTREMES {
                let mut h = header.clone();
                h[name]["shape"][d] = v.into();
                cases.push(Case { class, what: format!("{name}: shape[{d}] = {v}"), file, bytes: with_header(&h) });
            }
        }
        let mut h = header.clone();
        h[name]["shape"].as_array_mut().unwrap().push(1.into());
        cases.push(Case { class, what: format!("{name}: extra dimension"), file, bytes: with_header(&h) });
        for (i, v) in [(0, 1u64), (1, 1), (1, u64::MAX), (0, 1 << 62)] {
            let mut h = header.clone();
            let cur = h[name]["data_offsets"][i].as_u64().unwrap();
            h[name]["data_offsets"][i] = if v == 1 { cur + 1 } else { v }.into();
            cases.push(Case { class, what: format!("{name}: data_offsets[{i}] moved"), file, bytes: with_header(&h) });
        }
        let mut h = header.clone();
        h.as_object_mut().unwrap().remove(name);
        cases.push(Case { class, what: format!("{name}: removed"), file, bytes: with_header(&h) });
    }
    let mut rng = XorShift64::new(7);
    for _ in 0..60 {
        let at = rng.next_u64() as usize % (8 + n);
        let mut m = bytes.to_vec();
        m[at] ^= 1 << (rng.next_u64() % 8);
        cases.push(Case { class, what: format!("byte {at} flipped"), file, bytes: m });
    }
    for at in [0, 4, 8, 9, 8 + n / 2, 8 + n, 8 + n + 1, bytes.len() / 2, bytes.len() - 1] {
        cases.push(Case { class, what: format!("truncated at {at}"), file, bytes: bytes[..at].to_vec() });
    }
    cases
}

fn config_cases(config: &serde_json::Value) -> Vec<Case> {
    let class = "config.json";
    let file = "config.json";
    let values: Vec<serde_json::Value> = vec![
        0.into(),
        (-1).into(),
        1.into(),
        (1u64 << 31).into(),
        (1u64 << 32).into(),
        (1u64 << 62).into(),
        u64::MAX.into(),
        1.5.into(),
        (-1e-5).into(),
        "x".into(),
        serde_json::Value::Null,
        true.into(),
        serde_json::json!([]),
        serde_json::json!({}),
    ];
    let mut cases = Vec::new();
    for key in config.as_object().unwrap().keys() {
        for v in &values {
            let mut c = config.clone();
            c[key] = v.clone();
            let bytes = serde_json::to_vec_pretty(&c).unwrap();
            cases.push(Case { class, what: format!("{key} = {v}"), file, bytes });
        }
        let mut c = config.clone();
        c.as_object_mut().unwrap().remove(key);
        cases.push(Case { class, what: format!("{key} removed"), file, bytes: serde_json::to_vec(&c).unwrap() });
    }
    let text = serde_json::to_vec_pretty(config).unwrap();
    for at in [0, 1, text.len() / 2, text.len() - 1] {
        cases.push(Case { class, what: format!("truncated at {at}"), file, bytes: text[..at].to_vec() });
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// imatrix (GGUF and legacy .dat)
// ---------------------------------------------------------------------------------------------

fn legacy_imatrix(m: &Imatrix) -> (Vec<u8>, Vec<(usize, String)>) {
    let mut b = (m.entries.len() as i32).to_le_bytes().to_vec();
    let mut fields = vec![(0usize, "entry count".to_string())];
    for (name, e) in &m.entries {
        fields.push((b.len(), format!("{name}: name length")));
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name.as_bytes());
        fields.push((b.len(), format!("{name}: ncall")));
        b.extend((e.counts[0] as i32).to_le_bytes());
        fields.push((b.len(), format!("{name}: nval")));
        b.extend((e.sums.len() as i32).to_le_bytes());
        for s in &e.sums {
            b.extend(s.to_le_bytes());
        }
    }
    fields.push((b.len(), "chunk count".into()));
    b.extend(3i32.to_le_bytes());
    (b, fields)
}

fn legacy_cases(m: &Imatrix) -> Vec<Case> {
    let (bytes, fields) = legacy_imatrix(m);
    let mut cases = Vec::new();
    for (at, name) in fields.iter().step_by(2) {
        for v in [0i32, 1, -1, i32::MIN, i32::MAX, 1 << 20] {
            let mut b = bytes.clone();
            b[*at..*at + 4].copy_from_slice(&v.to_le_bytes());
            cases.push(Case { class: "imatrix.dat", what: format!("{name} = {v}"), file: "imatrix.dat", bytes: b });
        }
    }
    for at in [0, 2, 4, 20, bytes.len() / 2, bytes.len() - 5] {
        cases.push(Case {
            class: "imatrix.dat",
            what: format!("truncated at {at}"),
            file: "imatrix.dat",
            bytes: bytes[..at].to_vec(),
        });
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// What went wrong with a case, if anything.
fn run_case(case: &Case, root: &Path, base: &Path, n: usize) -> Option<String> {
    let dir = root.join(format!("case{n}"));
    std::fs::create_dir(&dir).unwrap();
    // The case's input beside copies of what it needs (the rest of the checkpoint).
    let input_dir = dir.join("in");
    std::fs::create_dir(&input_dir).unwrap();
    for e in std::fs::read_dir(base).unwrap().flatten() {
        std::fs::copy(e.path(), input_dir.join(e.file_name())).unwrap();
    }
    std::fs::write(input_dir.join(case.file), &case.bytes).unwrap();
    let out_gguf = dir.join("out.gguf");
    let out_dir = dir.join("out-hf");
    let input_file = input_dir.join(case.file);
    let commands: Vec<Vec<String>> = match case.class {
        "gguf-f16" | "gguf-q8_0" => vec![
            vec!["inspect".into(), s(&input_file)],
            vec!["convert".into(), s(&input_file), "-o".into(), s(&out_gguf), "--outtype".into(), "f32".into()],
            vec!["import".into(), s(&input_file), "-o".into(), s(&out_dir)],
        ],
        "safetensors" | "config.json" => vec![
            vec!["inspect".into(), s(&input_dir)],
            vec!["convert".into(), s(&input_dir), "-o".into(), s(&out_gguf), "--outtype".into(), "q8_0".into()],
        ],
        _ => vec![vec![
            "convert".into(),
            s(&input_dir),
            "-o".into(),
            s(&out_gguf),
            "--outtype".into(),
            "q4_k_m".into(),
            "--imatrix".into(),
            s(&input_file),
        ]],
    };
    for args in commands {
        let _ = std::fs::remove_file(&out_gguf);
        let _ = std::fs::remove_dir_all(&out_dir);
        let before = listing(&dir);
        let problem = run_one(&args);
        if let Some(p) = problem {
            return Some(format!("[{}] {}: `{}`: {p}", case.class, case.what, args[0]));
        }
        let after = listing(&dir);
        let left: Vec<_> =
            after.iter().filter(|f| !before.contains(f) && !f.ends_with("out.gguf") && !f.contains("out-hf")).collect();
        if !left.is_empty() {
            return Some(format!("[{}] {}: `{}` left {left:?}", case.class, case.what, args[0]));
        }
        if after.iter().any(|f| f.ends_with(".tmp")) {
            return Some(format!("[{}] {}: `{}` left a temporary file", case.class, case.what, args[0]));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    None
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// Run the binary on `args`; a problem if it panicked, died on a signal, hung, exited with an
/// unexpected code, or failed without exactly one `error:` line.
fn run_one(args: &[String]) -> Option<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(args)
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Some(format!("hung (killed after {} s)", CASE_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        return Some(format!("panic: {stderr}"));
    }
    match status.code() {
        None => Some(format!("killed by a signal ({status}): {stderr}")),
        Some(0) => None,
        Some(1 | 2) => {
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() == 1 && lines[0].starts_with("error: ") {
                None
            } else {
                Some(format!("not one error line: {stderr:?}"))
            }
        }
        Some(c) => Some(format!("exit code {c}: {stderr}")),
    }
}

#[test]
fn every_mutated_input_ends_in_success_or_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    synth::write_llama_checkpoint(&hf, &SynthSpec::tiny_llama()).unwrap();
    let convert = |outtype: &str| {
        let out = tmp.path().join(format!("tiny-{outtype}.gguf"));
        let st = Command::new(env!("CARGO_BIN_EXE_microscale"))
            .args(["convert", "-q", &s(&hf), "-o", &s(&out), "--outtype", outtype])
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(out).unwrap()
    };
    let f16 = convert("f16");
    let q8 = convert("q8_0");
    // An imatrix for the checkpoint's own tensors (so the unmutated file is accepted).
    let f32_gguf = tmp.path().join("tiny-f32.gguf");
    let st = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(["convert", "-q", &s(&hf), "-o", &s(&f32_gguf), "--outtype", "f32"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut m = Imatrix { datasets: vec!["synthetic".into()], chunk_count: 3, chunk_size: 64, ..Default::default() };
    let file = microscale::gguf::GgufFile::open(&f32_gguf).unwrap();
    for t in file.tensors.iter().filter(|t| t.ne.len() == 2 && t.name.starts_with("blk.")) {
        let n = t.ne[0] as usize;
        m.entries
            .insert(t.name.clone(), ImatrixEntry { sums: (0..n).map(|i| 1.0 + i as f32).collect(), counts: vec![3.0] });
    }
    let imatrix_gguf = tmp.path().join("imatrix.gguf");
    m.save(&imatrix_gguf).unwrap();
    let imatrix_bytes = std::fs::read(&imatrix_gguf).unwrap();

    let mut cases = Vec::new();
    // GGUF inputs go alone into their case directory; HF inputs beside the rest of the checkpoint.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    cases.extend(gguf_cases("gguf-f16", "model.gguf", &f16, 1).into_iter().map(|c| (c, empty.clone())));
    // q8_0: the same header (other type tags and sizes), fewer repeats of what f16 covered.
    cases.extend(gguf_cases("gguf-q8_0", "model.gguf", &q8, 2).into_iter().step_by(3).map(|c| (c, empty.clone())));
    let st_bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    cases.extend(safetensors_cases(&st_bytes).into_iter().map(|c| (c, hf.clone())));
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    cases.extend(config_cases(&config).into_iter().map(|c| (c, hf.clone())));
    cases.extend(
        gguf_cases("imatrix-gguf", "imatrix.gguf", &imatrix_bytes, 3).into_iter().step_by(2).map(|c| (c, hf.clone())),
    );
    cases.extend(legacy_cases(&m).into_iter().map(|c| (c, hf.clone())));
    // Structural lies no single field can tell: a duplicated key and a duplicated tensor name.
    let keys: Vec<String> = microscale::gguf::GgufFile::open(&tmp.path().join("tiny-f16.gguf"))
        .unwrap()
        .metadata
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    let (k1, k2) = keys
        .iter()
        .enumerate()
        .find_map(|(i, a)| keys[i + 1..].iter().find(|b| b.len() == a.len()).map(|b| (a.clone(), b.clone())))
        .expect("two keys of the same length");
    let dup_key = duplicate_in_header(&f16, &k1, &k2);
    cases.push((
        Case { class: "gguf-f16", what: "duplicate key".into(), file: "model.gguf", bytes: dup_key },
        empty.clone(),
    ));
    let dup_tensor = duplicate_in_header(&f16, "blk.0.attn_k.weight", "blk.0.attn_q.weight");
    cases.push((
        Case { class: "gguf-f16", what: "duplicate tensor name".into(), file: "model.gguf", bytes: dup_tensor },
        empty.clone(),
    ));

    let mut classes: std::collections::BTreeMap<&str, usize> = Default::default();
    for (c, _) in &cases {
        *classes.entry(c.class).or_default() += 1;
    }
    eprintln!("bad-input corpus: {} cases {classes:?}", cases.len());
    assert!(cases.len() > 1500, "{} cases", cases.len());

    // Two workers (the machine has two cores); every failure is collected, then reported at once.
    let root = tmp.path().join("cases");
    std::fs::create_dir(&root).unwrap();
    let next = AtomicUsize::new(0);
    let problems = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((case, base)) = cases.get(i) else { break };
                if let Some(p) = run_case(case, &root, base, i) {
                    problems.lock().unwrap().push(p);
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    assert!(problems.is_empty(), "{} of {} cases misbehaved:\n{}", problems.len(), cases.len(), problems.join("\n"));
}

/// The GGUF with the first occurrence of the name `from` replaced by `to` (same length), as a
/// length-prefixed string in the header.
fn duplicate_in_header(b: &[u8], to: &str, from: &str) -> Vec<u8> {
    assert_eq!(to.len(), from.len());
    let mut needle = (from.len() as u64).to_le_bytes().to_vec();
    needle.extend(from.as_bytes());
    let at = b.windows(needle.len()).position(|w| w == needle).unwrap_or_else(|| panic!("{from} not in the header"));
    let mut out = b.to_vec();
    out[at + 8..at + 8 + to.len()].copy_from_slice(to.as_bytes());
    out
}
