//! The bad-input suite: real files (a converted GGUF, its safetensors checkpoint and config.json,
//! an imatrix in both formats), mutated field by field — counts, lengths, type tags, offsets and
//! dimensions set to 0, 1, 2^31, 2^32, 2^62, 2^64−1 and neighbours of their true value — plus
//! byte flips and truncations. Every case is run through the real binary and must end in exit 0
//! or in exactly one `error:` line with exit 1 or 2: never a panic, a signal, a hang, or an
//! output left behind.

use crate::common;

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

/// Run the binary on `args` (stdin closed, stdout discarded): its exit status and stderr, or
/// that it hung and was killed after [`CASE_TIMEOUT`].
fn run_binary(args: &[String]) -> Result<(std::process::ExitStatus, String), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(args)
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
            return Err(format!("hung (killed after {} s)", CASE_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    Ok((status, stderr))
}

/// Run the binary on `args` (quiet); a problem if it panicked, died on a signal, hung, exited with an
/// unexpected code, or failed without exactly one `error:` line.
fn run_one(args: &[String]) -> Option<String> {
    let quiet: Vec<String> = args.iter().cloned().chain(["-q".to_string()]).collect();
    let (status, stderr) = match run_binary(&quiet) {
        Ok(done) => done,
        Err(hung) => return Some(hung),
    };
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

// =============================================================================================
// The surfaces added since the first pass: where outputs go, the statistics files, grids, task
// files and numeric flags. Every case says what must happen (refused, or either way), and every
// class must stay at zero: no panic, no signal, no hang, no output left by a refused run, no
// silent acceptance, and no input changed (sha256 of every input before and after).
// =============================================================================================

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Exit 1 or 2 with exactly one `error:` line, and none of the run's outputs exist.
    Refused,
    /// Refused as above, or exit 0.
    Either,
    /// Exit 0, saying `warning:` (the run is not quiet).
    WarnedOk,
    /// Exit 0.
    Ok,
}

struct Run {
    class: &'static str,
    what: String,
    args: Vec<String>,
    expect: Expect,
    /// The run's own outputs: none may exist after a refusal.
    outputs: Vec<PathBuf>,
    /// What a refusal's line must name (the flag at fault), where the case knows it.
    names: Option<String>,
}

/// The fixture: every input a case may name, under `root/in` (hashed around every run).
struct Inputs {
    root: PathBuf,
    paths: BTreeMap<&'static str, PathBuf>,
}

impl Inputs {
    fn get(&self, key: &str) -> &Path {
        self.paths.get(key).unwrap_or_else(|| panic!("no input {key}"))
    }

    fn s(&self, key: &str) -> String {
        s(self.get(key))
    }

    fn dir(&self) -> PathBuf {
        self.root.join("in")
    }

    /// A new file under `in/` (a mutated input), hashed with the rest.
    fn add(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir().join("mutated").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

fn sha_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in listing(dir) {
        let p = Path::new(&f);
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.is_file() {
            out.insert(f.clone(), format!("{:x}", Sha256::digest(std::fs::read(p).unwrap())));
        } else if !meta.is_dir() {
            out.insert(f.clone(), format!("{:?}", meta.file_type()));
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn microscale_ok(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_microscale")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Build the fixture: a tiny checkpoint and its GGUF, importance matrices, a text, task files,
/// a saved KLD base, a grid and a copy of the data folder.
fn inputs(root: &Path) -> Inputs {
    let dir = root.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = BTreeMap::new();
    let hf = dir.join("hf");
    std::fs::create_dir(&hf).unwrap();
    synth::write_llama_checkpoint(&hf, &SynthSpec::tiny_llama()).unwrap();
    let gguf = dir.join("tiny.gguf");
    microscale_ok(&["convert", "-q", &s(&hf), "-o", &s(&gguf), "--outtype", "f32"]);
    let data = dir.join("data");
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data"), &data);
    let text = dir.join("text.txt");
    let wiki = std::fs::read_to_string(data.join("wikitext-2/wiki.test.raw")).unwrap();
    std::fs::write(&text, &wiki[..wiki.char_indices().nth(20_000).unwrap().0]).unwrap();
    let imatrix = dir.join("imatrix.gguf");
    good_imatrix(&gguf).save(&imatrix).unwrap();
    let task = dir.join("task.jsonl");
    std::fs::write(&task, GOOD_TASK).unwrap();
    let kld = dir.join("base.kld");
    microscale_ok(&[
        "eval",
        "-q",
        &s(&gguf),
        "--ppl",
        &s(&text),
        "--chunks",
        "2",
        "-c",
        "64",
        "--save-kld-base",
        &s(&kld),
    ]);
    let grid = dir.join("grid.toml");
    std::fs::write(&grid, good_grid(&task)).unwrap();
    for (k, p) in [
        ("hf", hf),
        ("gguf", gguf),
        ("data", data),
        ("text", text),
        ("imatrix", imatrix),
        ("task", task),
        ("kld", kld),
        ("grid", grid),
    ] {
        paths.insert(k, p);
    }
    Inputs { root: root.to_path_buf(), paths }
}

const GOOD_TASK: &str = r#"{"context": "The sky is", "choices": ["blue", "green"], "label": 0}
{"context": "Two and two make", "choices": ["four", "five", "six"], "label": 0}
{"context": "Water is", "choices": ["dry", "wet"], "label": 1}
"#;

fn good_grid(task: &Path) -> String {
    format!(
        r#"[eval]
ppl_chunks = 1
kld_chunks = 1
tasks = ["mc:{}"]
limit = 2
[bench]
profiles = []
[calib]
chunks = 1
[[variant]]
quant = "q8_0"
[[matrix]]
methods = ["magnitude"]
ratios = [0.5]
quants = ["q8_0"]
"#,
        task.display()
    )
}

/// An importance matrix for every block matrix of the tiny model (so the unmutated one is used).
fn good_imatrix(gguf: &Path) -> Imatrix {
    let mut m = Imatrix { datasets: vec!["synthetic".into()], chunk_count: 3, chunk_size: 64, ..Default::default() };
    let file = microscale::gguf::GgufFile::open(gguf).unwrap();
    for t in file.tensors.iter().filter(|t| t.ne.len() == 2 && t.name.starts_with("blk.")) {
        let n = t.ne[0] as usize;
        m.entries
            .insert(t.name.clone(), ImatrixEntry { sums: (0..n).map(|i| 1.0 + i as f32).collect(), counts: vec![3.0] });
    }
    m
}

/// Run one case; a problem if it misbehaved.
fn check_run(run: &Run, inputs: &Inputs) -> Option<String> {
    let label = format!("[{}] {}", run.class, run.what);
    let before = sha_tree(&inputs.dir());
    let (status, stderr) = match run_binary(&run.args) {
        Ok(done) => done,
        Err(hung) => return Some(format!("{label}: {hung}")),
    };
    if sha_tree(&inputs.dir()) != before {
        return Some(format!("{label}: an input changed: {:?}", run.args));
    }
    if listing(&inputs.root).iter().any(|f| f.ends_with(".tmp")) {
        return Some(format!("{label}: left a temporary file"));
    }
    if stderr.contains("panicked") {
        return Some(format!("{label}: panic: {stderr}"));
    }
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let refused = matches!(status.code(), Some(1 | 2)) && lines.len() == 1 && lines[0].starts_with("error: ");
    let problem = match (status.code(), run.expect) {
        (None, _) => Some(format!("killed by a signal ({status})")),
        (Some(0), Expect::Ok | Expect::Either) => None,
        (Some(0), Expect::WarnedOk) if stderr.contains("warning:") => None,
        (Some(0), Expect::WarnedOk) => Some("accepted without a warning".to_string()),
        (Some(0), Expect::Refused) => Some("silently accepted".to_string()),
        (_, Expect::Refused | Expect::Either) if refused => match &run.names {
            Some(n) if !lines[0].contains(n.as_str()) => Some(format!("the error does not name {n}")),
            _ => run.outputs.iter().find(|o| o.exists()).map(|o| format!("refused, but left {}", o.display())),
        },
        (Some(c), _) => Some(format!("exit {c}, not one error line")),
    };
    problem.map(|p| format!("{label}: {p}: {:?}\n    stderr: {}", run.args, stderr.trim()))
}

// ---------------------------------------------------------------------------------------------
// Class 1: every command's output flags against every input flag it has.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Out {
    File,
    /// A directory made whole.
    Dir,
    /// A directory the command fills with its own entries (a sweep's `variants/`, `rows/`, ...).
    Filled,
}

/// One argument of a command's template: literal, an input (flag, value prefix, fixture key),
/// or an output (flag, kind).
#[derive(Clone, Copy, Debug)]
enum A {
    L(&'static str),
    I(&'static str, &'static str, &'static str),
    O(&'static str, Out),
}
use A::{I, L, O};

/// Commands that write, each with every input and output path flag it has; `runs`: whether the
/// template itself is run (and must succeed) to show the refusals are about the paths.
fn writing_commands() -> Vec<(&'static str, bool, Vec<A>)> {
    let f = Out::File;
    vec![
        (
            "convert",
            true,
            vec![
                L("convert"),
                I("SRC", "", "hf"),
                L("-o"),
                O("--output", f),
                L("--outtype"),
                L("q8_0"),
                L("--imatrix"),
                I("--imatrix", "", "imatrix"),
                L("--calib-text"),
                I("--calib-text", "", "text"),
                L("--data-dir"),
                I("--data-dir", "", "data"),
            ],
        ),
        (
            "convert",
            true,
            vec![
                L("convert"),
                I("SRC", "", "hf"),
                L("-o"),
                O("--output", f),
                L("--sparsity"),
                L("0.5"),
                L("--sparsity-method"),
                L("wanda"),
                L("--calib"),
                O("--calib", f),
                L("--calib-text"),
                I("--calib-text", "", "text"),
                L("--calib-chunks"),
                L("1"),
            ],
        ),
        (
            "prune-plan",
            true,
            vec![
                L("prune-plan"),
                I("SRC", "", "hf"),
                L("--sparsity"),
                L("0.5"),
                L("--sparsity-method"),
                L("wanda"),
                L("--calib"),
                O("--calib", f),
                L("--calib-text"),
                I("--calib-text", "", "text"),
                L("--calib-chunks"),
                L("1"),
                L("--imatrix"),
                I("--imatrix", "", "imatrix"),
                L("--data-dir"),
                I("--data-dir", "", "data"),
            ],
        ),
        (
            "imatrix",
            true,
            vec![
                L("imatrix"),
                I("MODEL", "", "gguf"),
                L("-f"),
                I("--file", "", "text"),
                L("--in-file"),
                I("--in-file", "", "imatrix"),
                L("-o"),
                O("--output", f),
                L("--chunks"),
                L("1"),
                L("-c"),
                L("16"),
                L("--data-dir"),
                I("--data-dir", "", "data"),
            ],
        ),
        (
            "eval",
            true,
            vec![
                L("eval"),
                I("MODEL", "", "gguf"),
                L("--ppl"),
                I("--ppl", "", "text"),
                L("--task"),
                I("--task", "mc:", "task"),
                L("--data-dir"),
                I("--data-dir", "", "data"),
                L("--save-kld-base"),
                O("--save-kld-base", f),
                L("--csv"),
                O("--csv", f),
                L("--chunks"),
                L("1"),
                L("-c"),
                L("64"),
            ],
        ),
        (
            "eval",
            true,
            vec![
                L("eval"),
                I("MODEL", "", "gguf"),
                L("--kld-base"),
                I("--kld-base", "", "kld"),
                L("--csv"),
                O("--csv", f),
                L("--chunks"),
                L("1"),
                L("-c"),
                L("64"),
            ],
        ),
        (
            "stock-quantize",
            true,
            vec![
                L("stock-quantize"),
                I("INPUT", "", "gguf"),
                O("OUTPUT", f),
                L("q8_0"),
                L("--imatrix"),
                I("--imatrix", "", "imatrix"),
            ],
        ),
        ("import", true, vec![L("import"), I("GGUF", "", "gguf"), L("-o"), O("--output", Out::Dir)]),
        (
            "bench",
            true,
            vec![
                L("bench"),
                I("MODELS", "", "gguf"),
                L("--csv"),
                O("--csv", f),
                L("--out"),
                O("--out", f),
                L("--reps"),
                L("1"),
                L("--pp"),
                L("8"),
                L("--tg"),
                L("2"),
            ],
        ),
        // A whole sweep is minutes: the template builds only the baseline, through the same checks.
        (
            "sweep",
            true,
            vec![
                L("sweep"),
                L("--model"),
                I("--model", "", "hf"),
                L("--grid"),
                I("--grid", "", "grid"),
                L("--out"),
                O("--out", Out::Filled),
                L("--data-dir"),
                I("--data-dir", "", "data"),
                L("--as-shipped"),
                I("--as-shipped", "", "gguf"),
                L("--variant"),
                L("baseline-f32"),
                L("--build-only"),
            ],
        ),
    ]
}

/// Commands that only read, with their input path flags (a FIFO among them must not block).
fn reading_commands() -> Vec<(&'static str, Vec<A>)> {
    vec![
        ("inspect", vec![L("inspect"), I("SRC", "", "gguf")]),
        ("generate", vec![L("generate"), I("MODEL", "", "gguf"), L("-p"), L("hi"), L("-n"), L("1")]),
        (
            "generate",
            vec![L("generate"), I("MODEL", "", "gguf"), L("--file"), I("--file", "", "text"), L("-n"), L("1")],
        ),
        ("chat", vec![L("chat"), I("MODEL", "", "gguf")]),
        ("report", vec![L("report"), I("DIR", "", "data")]),
        ("report", vec![L("report"), I("DIR", "", "data"), L("--device-rows"), I("--device-rows", "", "text")]),
    ]
}

/// Flags (and positionals) that take a value which is not a path, by the name `--help` shows.
const NOT_PATHS: &[&str] = &[
    "--outtype",
    "--tensor-type",
    "--output-tensor-type",
    "--token-embedding-type",
    "--target-size",
    "--target-bpw",
    "--loss-scale",
    "--max-ppl",
    "--max-acc-drop",
    "--proxy-windows",
    "--proxy-kld",
    "--steps",
    "--rounds",
    "--prune-trial",
    "--format",
    "--quantize",
    "--prefill",
    "--ctx",
    "--weights",
    "--seq",
    "--confirms",
    "--floor",
    "--base-model",
    "--quant-method",
    "--sparsity",
    "--sparsity-method",
    "--nm",
    "--drop-layers",
    "--drop-layers-list",
    "--prune-ffn",
    "--prune-heads",
    "--heads-mode",
    "--width-allocation",
    "--align",
    "--calib-chunks",
    "--sequential",
    "--chunks",
    "--ctx-size",
    "--batch-size",
    "--threads",
    "--shots",
    "--limit",
    "--seed",
    "--gpu-layers",
    "--profile",
    "--mem-limit",
    "--cpu-quota",
    "--device",
    "--reps",
    "--pp",
    "--tg",
    "--timeout",
    "--variant",
    "--variant-timeout",
    "--slurm-parallel",
    "--partition",
    "--account",
    "--time",
    "--cpus-per-task",
    "--mem",
    "--gres",
    "--slurm-setup",
    "--max-ppl-increase",
    "--max-acc-drop",
    "--acc-budget",
    "--objective",
    "--sweet-spot",
    "--caveat",
    "--prompt",
    "--max-tokens",
    "--temp",
    "--top-k",
    "--top-p",
    "--min-p",
    "--repeat-penalty",
    "--chat-template",
    "--system",
    "--rows",
    "--slurm-arg",
    "--repeat-last-n",
    "--row-len",
    "--type",
    "SCHEME",
    "--dtype",
    "--keep-going",
    "--slurm-extra",
    "--qos",
    "--constraint",
    "--nodes",
];

/// Every flag and positional of `microscale CMD --help` that takes a value.
fn valued_flags(cmd: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_microscale")).args([cmd, "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = Vec::new();
    let mut section = "";
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = if line.starts_with("Arguments") { "args" } else { "options" };
            continue;
        }
        let t = line.trim_start();
        if line.len() - t.len() > 6 {
            continue; // help text
        }
        if section == "args" && (t.starts_with('<') || t.starts_with('[')) {
            let name: String = t.chars().skip(1).take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            flags.push(name);
        } else if t.starts_with('-') {
            let long = t.split([',', ' ']).find(|w| w.starts_with("--"));
            if let Some(long) = long {
                let rest = &t[t.find(long).unwrap() + long.len()..];
                if rest.starts_with(" <") || rest.starts_with(" [<") || rest.starts_with("[=<") {
                    flags.push(long.to_string());
                }
            }
        }
    }
    flags
}

fn template_args(t: &[A], inputs: &Inputs, outs: &BTreeMap<&str, PathBuf>) -> Vec<String> {
    t.iter()
        .map(|a| match *a {
            L(x) => x.to_string(),
            I(_, prefix, key) => format!("{prefix}{}", inputs.s(key)),
            O(flag, _) => s(&outs[flag]),
        })
        .collect()
}

fn output_policy_runs(inputs: &Inputs, scratch: &Path) -> Vec<Run> {
    let mut runs = Vec::new();
    let null = scratch.join("null");
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    let fifo = scratch.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut n = 0;
    let mut fresh = |kind: Out| {
        n += 1;
        scratch.join(format!("out{n}{}", if kind == Out::File { ".out" } else { "" }))
    };
    for (cmd, runs_itself, t) in writing_commands() {
        let outputs: Vec<(&str, Out)> =
            t.iter().filter_map(|a| if let O(f, k) = a { Some((*f, *k)) } else { None }).collect();
        let ins: Vec<(&str, &str, &str)> =
            t.iter().filter_map(|a| if let I(f, p, k) = a { Some((*f, *p, *k)) } else { None }).collect();
        let fresh_outs = |fresh: &mut dyn FnMut(Out) -> PathBuf| -> BTreeMap<&str, PathBuf> {
            outputs.iter().map(|(f, k)| (*f, fresh(*k))).collect()
        };
        if runs_itself {
            let outs = fresh_outs(&mut fresh);
            let args = template_args(&t, inputs, &outs);
            runs.push(Run {
                class: "output-policy",
                what: format!("{cmd} as written"),
                args,
                expect: Expect::Ok,
                outputs: vec![],
                names: None,
            });
        }
        for &(oflag, kind) in &outputs {
            let mut targets: Vec<(String, PathBuf)> = Vec::new();
            for &(iflag, _, key) in &ins {
                let p = inputs.get(key).to_path_buf();
                targets.push((format!("{oflag} = the {iflag} input"), p.clone()));
                if p.is_dir() {
                    targets.push((format!("{oflag} inside the {iflag} directory"), p.join("sub").join("new")));
                    if let Some(first) = listing(&p).into_iter().find(|f| Path::new(f).is_file()) {
                        targets.push((format!("{oflag} = a file inside the {iflag} directory"), PathBuf::from(first)));
                    }
                } else if kind == Out::Dir {
                    // A directory made whole must not hold an input (a filled one may, beside its
                    // entries: that case is below).
                    targets.push((
                        format!("{oflag} = the directory around the {iflag} input"),
                        p.parent().unwrap().to_path_buf(),
                    ));
                }
            }
            if kind == Out::File {
                targets.push((format!("{oflag} = a link to /dev/null"), null.clone()));
                targets.push((format!("{oflag} = a FIFO"), fifo.clone()));
            }
            for (what, target) in targets {
                let mut outs = fresh_outs(&mut fresh);
                outs.insert(oflag, target);
                let others: Vec<PathBuf> = outs.iter().filter(|(f, _)| **f != oflag).map(|(_, p)| p.clone()).collect();
                let args = template_args(&t, inputs, &outs);
                runs.push(Run {
                    class: "output-policy",
                    what: format!("{cmd}: {what}"),
                    args,
                    expect: Expect::Refused,
                    outputs: others,
                    names: Some(oflag.to_string()),
                });
            }
        }
        // Two outputs at one path.
        if outputs.len() > 1 {
            let mut outs = fresh_outs(&mut fresh);
            let shared = outs[outputs[0].0].clone();
            outs.insert(outputs[1].0, shared.clone());
            let args = template_args(&t, inputs, &outs);
            let what = format!("{cmd}: {} and {} at one path", outputs[0].0, outputs[1].0);
            runs.push(Run {
                class: "output-policy",
                what,
                args,
                expect: Expect::Refused,
                outputs: vec![shared],
                names: Some(outputs[1].0.to_string()),
            });
        }
    }
    for (cmd, t) in reading_commands() {
        for (i, a) in t.iter().enumerate() {
            if let I(flag, prefix, _) = a {
                let mut args = template_args(&t, inputs, &BTreeMap::new());
                args[i] = format!("{prefix}{}", s(&fifo));
                runs.push(Run {
                    class: "fifo-input",
                    what: format!("{cmd}: {flag} is a FIFO"),
                    args,
                    expect: Expect::Refused,
                    outputs: vec![],
                    names: Some(flag.to_string()),
                });
            }
        }
    }
    runs.extend(sound_paths(inputs, scratch));
    // A FIFO as every writing command's inputs, too.
    for (cmd, _, t) in writing_commands() {
        for (i, a) in t.iter().enumerate() {
            if let I(flag, prefix, _) = a {
                let outs: BTreeMap<&str, PathBuf> =
                    t.iter().filter_map(|a| if let O(f, k) = a { Some((*f, fresh(*k))) } else { None }).collect();
                let mut args = template_args(&t, inputs, &outs);
                args[i] = format!("{prefix}{}", s(&fifo));
                let outputs = outs.values().cloned().collect();
                runs.push(Run {
                    class: "fifo-input",
                    what: format!("{cmd}: {flag} is a FIFO"),
                    args,
                    expect: Expect::Refused,
                    outputs,
                    names: Some(flag.to_string()),
                });
            }
        }
    }
    runs
}

/// Paths the policy must accept, and a filled directory holding an input under one of its entries.
fn sound_paths(inputs: &Inputs, scratch: &Path) -> Vec<Run> {
    let elsewhere = scratch.join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("sub")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, scratch.join("linked")).unwrap();
    let convert = |out: PathBuf, extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "convert".into(),
            "-q".into(),
            inputs.s("hf"),
            "-o".into(),
            s(&out),
            "--outtype".into(),
            "q8_0".into(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let calib = scratch.join("reused.calib.gguf");
    let wanda = ["--sparsity", "0.5", "--sparsity-method", "wanda", "--calib-chunks", "1", "--calib-text"];
    let mut with_calib: Vec<String> = wanda.iter().map(|x| x.to_string()).collect();
    with_calib.extend([inputs.s("text"), "--calib".into(), s(&calib)]);
    let with_calib: Vec<&str> = with_calib.iter().map(String::as_str).collect();
    let ok = |what: &str, args: Vec<String>| Run {
        class: "output-policy",
        what: what.to_string(),
        args,
        expect: Expect::Ok,
        outputs: vec![],
        names: None,
    };
    let filled = inputs.dir().join("mutated/filled");
    let grid_inside = inputs.add("filled/variants/grid.toml", &std::fs::read(inputs.get("grid")).unwrap());
    vec![
        ok("convert -o through a linked directory", convert(scratch.join("linked/a.gguf"), &[])),
        ok("convert -o with `..`", convert(elsewhere.join("sub/../b.gguf"), &[])),
        ok("convert --calib written", convert(scratch.join("c1.gguf"), &with_calib)),
        ok("convert --calib reused", convert(scratch.join("c2.gguf"), &with_calib)),
        Run {
            class: "output-policy",
            what: "sweep --out holds the --grid under its variants/".into(),
            args: vec![
                "sweep".into(),
                "-q".into(),
                "--model".into(),
                inputs.s("hf"),
                "--grid".into(),
                s(&grid_inside),
                "--out".into(),
                s(&filled),
                "--data-dir".into(),
                inputs.s("data"),
            ],
            expect: Expect::Refused,
            outputs: vec![filled.join("results.csv"), filled.join("rows")],
            names: Some("--out".into()),
        },
    ]
}

/// Every subcommand's path flags are in the tables above: a new flag that takes a path cannot
/// escape the walk.
fn unclassified_flags() -> Vec<String> {
    let mut known: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (cmd, _, t) in writing_commands() {
        for a in t {
            match a {
                I(f, ..) | O(f, _) => known.entry(cmd).or_default().push(f.to_string()),
                L(_) => {}
            }
        }
    }
    for (cmd, t) in reading_commands() {
        for a in t {
            if let I(f, ..) = a {
                known.entry(cmd).or_default().push(f.to_string());
            }
        }
    }
    // Paths the tables do not walk, and why: `sweep --status DIR` reads and merges a sweep's own
    // directory; `--in-file` alone with --show-statistics only reads; info and bench-quant take none.
    known.entry("sweep").or_default().push("--status".into());
    // `shrink` runs a whole search on valid input (minutes): its paths are refused in
    // tests/it/shrink.rs (an output that is an input, a missing model) and checked here as named.
    for f in ["MODEL", "--output", "--as-shipped", "--data-dir", "--study"] {
        known.entry("shrink").or_default().push(f.into());
    }
    // A LiteRT file's paths (`export -o`, `--tokenizer`) need the export environment: refused in
    // tests/it/export.rs (a GGUF of another architecture, a file that is no flatbuffer).
    for f in ["MODEL", "--output"] {
        known.entry("export").or_default().push(f.into());
    }
    for cmd in ["eval", "generate"] {
        known.entry(cmd).or_default().push("--tokenizer".into());
    }
    let mut missing = Vec::new();
    for cmd in [
        "export",
        "convert",
        "imatrix",
        "prune-plan",
        "sweep",
        "shrink",
        "report",
        "bench",
        "bench-quant",
        "stock-quantize",
        "import",
        "inspect",
        "eval",
        "generate",
        "chat",
        "info",
    ] {
        for flag in valued_flags(cmd) {
            let classified = NOT_PATHS.contains(&flag.as_str()) || known.get(cmd).is_some_and(|k| k.contains(&flag));
            if !classified {
                missing.push(format!("{cmd} {flag}"));
            }
        }
    }
    missing
}

// ---------------------------------------------------------------------------------------------
// Class 2: statistics files (importance matrices in both formats, merges, calibration files,
// saved KLD bases) with values no calibration can produce.
// ---------------------------------------------------------------------------------------------

fn statistics_runs(inputs: &Inputs, scratch: &Path) -> Vec<Run> {
    let good = good_imatrix(inputs.get("gguf"));
    let mut files: Vec<(String, PathBuf, Expect)> = Vec::new();
    let mut n = 0;
    let mut save = |m: &Imatrix, what: String, expect: Expect, files: &mut Vec<(String, PathBuf, Expect)>| {
        n += 1;
        let p = inputs.dir().join("mutated").join(format!("im{n}.gguf"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        m.save(&p).unwrap();
        files.push((what, p, expect));
    };
    let first = good.entries.keys().next().unwrap().clone();
    for (v, expect) in [
        (f32::NAN, Expect::Refused),
        (f32::INFINITY, Expect::Refused),
        (f32::NEG_INFINITY, Expect::Refused),
        (-1.0, Expect::Refused),
        (-1e-30, Expect::Refused),
        (-0.0, Expect::Either),
        (f32::MAX, Expect::Either),
        (0.0, Expect::Either),
    ] {
        for at in [0usize, 7] {
            let mut m = good.clone();
            m.entries.get_mut(&first).unwrap().sums[at] = v;
            save(&m, format!("sum {at} of {first} = {v}"), expect, &mut files);
        }
        let mut m = good.clone();
        m.entries.get_mut(&first).unwrap().counts[0] = v;
        // A count of 0 means "no token seen": the weights are 1 (llama-quantize's reading).
        save(&m, format!("count of {first} = {v}"), expect, &mut files);
    }
    let mut m = good.clone();
    m.entries.values_mut().for_each(|e| e.sums.iter_mut().for_each(|x| *x = f32::NAN));
    save(&m, "every sum NaN".into(), Expect::Refused, &mut files);
    let mut m = good.clone();
    m.entries = good.entries.iter().map(|(k, e)| (format!("{k}.renamed"), e.clone())).collect();
    save(&m, "no entry names a tensor".into(), Expect::Refused, &mut files);
    let mut m = good.clone();
    m.entries = good
        .entries
        .iter()
        .enumerate()
        .map(|(i, (k, e))| (if i % 2 == 0 { k.clone() } else { format!("x.{k}") }, e.clone()))
        .collect();
    save(&m, "half the entries name no tensor".into(), Expect::WarnedOk, &mut files);
    // Legacy .dat with a NaN and with a negative sum.
    for (v, what) in [(f32::NAN, "NaN"), (-2.0, "negative")] {
        let mut m = good.clone();
        m.entries.get_mut(&first).unwrap().sums[3] = v;
        let (bytes, _) = legacy_imatrix(&m);
        let p = inputs.add(&format!("legacy-{what}.dat"), &bytes);
        files.push((format!("legacy .dat with a {what} sum"), p, Expect::Refused));
    }

    let mut runs = Vec::new();
    let mut k = 0;
    let mut out = |ext: &str| {
        k += 1;
        scratch.join(format!("stat{k}.{ext}"))
    };
    for (what, file, expect) in &files {
        let quiet = if *expect == Expect::WarnedOk { None } else { Some("-q") };
        let mut push = |cmd: &str, mut args: Vec<String>, outputs: Vec<PathBuf>| {
            args.extend(quiet.map(String::from));
            runs.push(Run {
                class: "statistics",
                what: format!("{what}: {cmd}"),
                args,
                expect: *expect,
                outputs,
                names: None,
            });
        };
        let o = out("gguf");
        push(
            "convert",
            vec![
                "convert".into(),
                inputs.s("hf"),
                "-o".into(),
                s(&o),
                "--outtype".into(),
                "q4_k_m".into(),
                "--imatrix".into(),
                s(file),
            ],
            vec![o],
        );
        let o = out("gguf");
        // The size budget's allocator once spun forever on a NaN loss.
        push(
            "convert --target-bpw",
            vec![
                "convert".into(),
                inputs.s("hf"),
                "-o".into(),
                s(&o),
                "--outtype".into(),
                "q4_k_m".into(),
                "--imatrix".into(),
                s(file),
                "--target-bpw".into(),
                "7".into(),
            ],
            vec![o],
        );
        let o = out("gguf");
        push(
            "stock-quantize",
            vec!["stock-quantize".into(), inputs.s("gguf"), s(&o), "q4_k_m".into(), "--imatrix".into(), s(file)],
            vec![o],
        );
        let o = out("gguf");
        let expect_merge = if *expect == Expect::WarnedOk { Expect::Ok } else { *expect };
        let mut args = vec![
            "imatrix".into(),
            "--in-file".into(),
            inputs.s("imatrix"),
            "--in-file".into(),
            s(file),
            "-o".into(),
            s(&o),
        ];
        args.extend(quiet.map(String::from));
        runs.push(Run {
            class: "statistics",
            what: format!("{what}: merged"),
            args,
            expect: expect_merge,
            outputs: vec![o],
            names: None,
        });
    }
    // Two finite matrices whose sums add up past f32's range.
    let mut big = good.clone();
    big.entries.values_mut().for_each(|e| e.sums.iter_mut().for_each(|x| *x = 3e38));
    let big_path = inputs.dir().join("mutated").join("big.gguf");
    big.save(&big_path).unwrap();
    let o = out("gguf");
    runs.push(Run {
        class: "statistics",
        what: "a merge that overflows".into(),
        args: vec![
            "imatrix".into(),
            "-q".into(),
            "--in-file".into(),
            s(&big_path),
            "--in-file".into(),
            s(&big_path),
            "-o".into(),
            s(&o),
        ],
        expect: Expect::Refused,
        outputs: vec![o],
        names: None,
    });

    // Saved KLD bases: a row whose scale or minimum no log-softmax gives.
    let kld = std::fs::read(inputs.get("kld")).unwrap();
    let n_ctx = i32::from_le_bytes(kld[8..12].try_into().unwrap()) as usize;
    let n_chunk = i32::from_le_bytes(kld[16..20].try_into().unwrap()) as usize;
    let rows_at = 20 + 4 * n_ctx * n_chunk;
    let n_rows = (n_ctx - 1 - n_ctx / 2) * n_chunk;
    let per_row = (kld.len() - rows_at) / n_rows;
    for (field, v, expect) in [
        (0, f32::NAN, Expect::Refused),
        (0, f32::INFINITY, Expect::Refused),
        (0, -1.0, Expect::Refused),
        (4, f32::NAN, Expect::Refused),
        (4, f32::NEG_INFINITY, Expect::Refused),
        (4, 3.0, Expect::Refused),
        (0, 0.0, Expect::Either),
    ] {
        for row in [0, n_rows - 1] {
            let mut b = kld.clone();
            let at = rows_at + row * per_row + field;
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            let name = if field == 0 { "scale" } else { "minimum" };
            let p = inputs.add(&format!("kld-{row}-{name}-{v}.kld"), &b);
            let csv = out("csv");
            runs.push(Run {
                class: "kld-base",
                what: format!("row {row}'s {name} = {v}"),
                args: vec![
                    "eval".into(),
                    "-q".into(),
                    inputs.s("gguf"),
                    "--kld-base".into(),
                    s(&p),
                    "--chunks".into(),
                    "2".into(),
                    "-c".into(),
                    "64".into(),
                    "--csv".into(),
                    s(&csv),
                ],
                expect,
                outputs: vec![csv],
                names: None,
            });
        }
    }
    runs
}

// ---------------------------------------------------------------------------------------------
// Class 3: grids, refused before any work (the output directory is never made).
// ---------------------------------------------------------------------------------------------

fn grid_runs(inputs: &Inputs, scratch: &Path) -> Vec<Run> {
    let good = good_grid(inputs.get("task"));
    let bad_task = inputs.add("bad-task.jsonl", b"{\"context\": \"x\", \"choices\": [\"a\"], \"label\": 3}\n");
    let edits: Vec<(String, String)> = vec![
        ("ppl_chunks = 0".into(), good.replace("ppl_chunks = 1", "ppl_chunks = 0")),
        ("ppl_chunks = -1".into(), good.replace("ppl_chunks = 1", "ppl_chunks = -1")),
        ("ppl_chunks = 2^64".into(), good.replace("ppl_chunks = 1", "ppl_chunks = 18446744073709551616")),
        ("limit = 0".into(), good.replace("limit = 2", "limit = 0")),
        ("reps = 0".into(), good.replace("profiles = []", "profiles = [\"host\"]\nreps = 0")),
        ("pp = tg = 0".into(), good.replace("profiles = []", "profiles = [\"host\"]\npp = 0\ntg = 0")),
        ("an unknown profile".into(), good.replace("profiles = []", "profiles = [\"toaster\"]")),
        ("calib chunks = 0".into(), good.replace("chunks = 1\n[[variant]]", "chunks = 0\n[[variant]]")),
        ("ratio nan".into(), good.replace("ratios = [0.5]", "ratios = [nan]")),
        ("ratio inf".into(), good.replace("ratios = [0.5]", "ratios = [inf]")),
        ("ratio 1".into(), good.replace("ratios = [0.5]", "ratios = [1.0]")),
        ("ratio -0.1".into(), good.replace("ratios = [0.5]", "ratios = [-0.1]")),
        ("ratios = []".into(), good.replace("ratios = [0.5]", "ratios = []")),
        ("a variant's ratio without a method".into(), good.replace("quant = \"q8_0\"\n[[matrix]]", "quant = \"q8_0\"\nratio = 0.5\n[[matrix]]")),
        ("a variant's wanda ratio nan".into(), good.replace("quant = \"q8_0\"\n[[matrix]]", "quant = \"q8_0\"\nmethod = \"wanda\"\nratio = nan\n[[matrix]]")),
        ("an unknown method".into(), good.replace("methods = [\"magnitude\"]", "methods = [\"bogus\"]")),
        ("an unknown quant".into(), good.replace("quant = \"q8_0\"\n[[matrix]]", "quant = \"q9_9\"\n[[matrix]]")),
        ("target_bpw nan".into(), good.replace("quant = \"q8_0\"\n[[matrix]]", "quant = \"q4_k_m\"\ntarget_bpw = nan\n[[matrix]]")),
        ("a duplicated variant".into(), format!("{good}[[variant]]\nquant = \"q8_0\"\n")),
        ("a million variants".into(), good.replace("ratios = [0.5]", &format!("ratios = [{}]", (1..=1000).map(|i| format!("{}", i as f64 / 1001.0)).collect::<Vec<_>>().join(", "))).replace("methods = [\"magnitude\"]", "methods = [\"magnitude\", \"wanda\", \"sparsegpt\", \"ffn\", \"heads\", \"layers\", \"ffn-heal\", \"heads-heal\", \"layers-heal\", \"magnitude\"]").replace("quants = [\"q8_0\"]", &format!("quants = [{}]", ["\"q8_0\""; 100].join(", ")))),
        ("a missing mc: file".into(), good.replace(&inputs.s("task"), &format!("{}/nope.jsonl", inputs.dir().display()))),
        ("a malformed mc: file".into(), good.replace(&inputs.s("task"), &s(&bad_task))),
        ("an unknown task".into(), good.replace(&format!("mc:{}", inputs.s("task")), "arc-hard")),
    ];
    let mut runs = Vec::new();
    let names = ["../../escaped", "/tmp/absolute", "", ".hidden", "a/b", "nul\\u0000", "-flag", "sp ace"];
    let mut all = edits;
    for n in names {
        all.push((
            format!("variant named {n:?}"),
            good.replace("quant = \"q8_0\"\n[[matrix]]", &format!("name = \"{n}\"\nquant = \"q8_0\"\n[[matrix]]")),
        ));
    }
    for (i, (what, text)) in all.into_iter().enumerate() {
        let grid = inputs.add(&format!("grid{i}.toml"), text.as_bytes());
        let out = scratch.join(format!("sweep{i}"));
        runs.push(Run {
            class: "grid",
            what,
            args: vec![
                "sweep".into(),
                "-q".into(),
                "--model".into(),
                inputs.s("hf"),
                "--grid".into(),
                s(&grid),
                "--out".into(),
                s(&out),
                "--data-dir".into(),
                inputs.s("data"),
            ],
            expect: Expect::Refused,
            outputs: vec![out],
            names: None,
        });
    }
    // The unmutated grid is sound: its baseline builds.
    let out = scratch.join("sweep-good");
    runs.push(Run {
        class: "grid",
        what: "the grid as written (baseline built)".into(),
        args: vec![
            "sweep".into(),
            "-q".into(),
            "--model".into(),
            inputs.s("hf"),
            "--grid".into(),
            inputs.s("grid"),
            "--out".into(),
            s(&out),
            "--data-dir".into(),
            inputs.s("data"),
            "--variant".into(),
            "baseline-f32".into(),
            "--build-only".into(),
        ],
        expect: Expect::Ok,
        outputs: vec![],
        names: None,
    });
    runs
}

// ---------------------------------------------------------------------------------------------
// Class 4: task files, refused before the perplexity pass (whose saved base never appears).
// ---------------------------------------------------------------------------------------------

fn task_runs(inputs: &Inputs, scratch: &Path) -> Vec<Run> {
    let line = |l: &str| format!("{}{l}\n", GOOD_TASK);
    let generic: Vec<(&str, String)> = vec![
        ("label out of range", line(r#"{"context": "x", "choices": ["a", "b"], "label": 2}"#)),
        ("label negative", line(r#"{"context": "x", "choices": ["a", "b"], "label": -1}"#)),
        ("label a string", line(r#"{"context": "x", "choices": ["a", "b"], "label": "1"}"#)),
        ("label fractional", line(r#"{"context": "x", "choices": ["a", "b"], "label": 0.5}"#)),
        ("label 2^64", line(r#"{"context": "x", "choices": ["a", "b"], "label": 18446744073709551616}"#)),
        ("no choices", line(r#"{"context": "x", "choices": [], "label": 0}"#)),
        ("a choice not a string", line(r#"{"context": "x", "choices": ["a", 5], "label": 0}"#)),
        ("an empty choice", line(r#"{"context": "x", "choices": ["a", ""], "label": 0}"#)),
        ("no context", line(r#"{"choices": ["a", "b"], "label": 0}"#)),
        ("malformed JSON", line(r#"{"context": "x", "choices": ["a", "b"], "label": 0"#)),
        ("empty file", String::new()),
        ("not text", String::from_utf8_lossy(&[0xff, 0xfe, 0, 1, 2]).into_owned()),
    ];
    let arc_good = r#"{"question": {"stem": "Q?", "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "B"}]}, "answerKey": "A"}"#;
    let arc: Vec<(&str, String)> = vec![
        ("answerKey matching two labels", r#"{"question": {"stem": "Q?", "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "A"}]}, "answerKey": "A"}"#.into()),
        ("answerKey matching none", r#"{"question": {"stem": "Q?", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "C"}"#.into()),
        ("no stem", r#"{"question": {"choices": [{"text": "a", "label": "A"}]}, "answerKey": "A"}"#.into()),
        ("no choices", r#"{"question": {"stem": "Q?", "choices": []}, "answerKey": "A"}"#.into()),
    ];
    let mut runs = Vec::new();
    let eval = |task: String, data: Option<&Path>, i: usize| {
        let saved = scratch.join(format!("task{i}.kld"));
        let mut args = vec![
            "eval".into(),
            "-q".into(),
            inputs.s("gguf"),
            "--ppl".into(),
            inputs.s("text"),
            "--chunks".into(),
            "1".into(),
            "-c".into(),
            "64".into(),
            "--save-kld-base".into(),
            s(&saved),
            "--task".into(),
            task,
        ];
        if let Some(d) = data {
            args.extend(["--data-dir".into(), s(d)]);
        }
        (args, saved)
    };
    for (i, (what, text)) in generic.into_iter().enumerate() {
        let p = inputs.add(&format!("task{i}.jsonl"), text.as_bytes());
        let (args, saved) = eval(format!("mc:{}", s(&p)), None, i);
        runs.push(Run {
            class: "task-file",
            what: format!("mc: {what}"),
            args,
            expect: Expect::Refused,
            outputs: vec![saved],
            names: None,
        });
    }
    for (i, (what, bad)) in arc.into_iter().enumerate() {
        let data = inputs.dir().join("mutated").join(format!("data{i}"));
        std::fs::create_dir_all(data.join("arc")).unwrap();
        std::fs::write(data.join("arc/ARC-Easy-Dev.jsonl"), format!("{arc_good}\n{bad}\n")).unwrap();
        let (args, saved) = eval("arc-easy".into(), Some(&data), 100 + i);
        runs.push(Run {
            class: "task-file",
            what: format!("arc: {what}"),
            args,
            expect: Expect::Refused,
            outputs: vec![saved],
            names: None,
        });
    }
    runs
}

// ---------------------------------------------------------------------------------------------
// Class 5: numeric flags at the edges of what llama.cpp and the machine take.
// ---------------------------------------------------------------------------------------------

fn flag_runs(inputs: &Inputs, scratch: &Path) -> Vec<Run> {
    const HUGE: [&str; 5] =
        ["4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616"];
    let mut cases: Vec<(Vec<&str>, &str, Vec<&str>, Expect)> = Vec::new();
    let eval = vec!["eval", "GGUF", "--ppl", "TEXT", "--chunks", "1", "-c", "64"];
    let generate = vec!["generate", "GGUF", "-p", "hi", "-n", "2"];
    let imatrix = vec!["imatrix", "GGUF", "-f", "TEXT", "--chunks", "1", "-c", "16", "-o", "OUT"];
    for (base, flags) in [
        (&eval, vec!["-t", "-c", "-b", "--chunks"]),
        (&generate, vec!["-t", "-c", "-b", "-n"]),
        (&imatrix, vec!["-t", "-c", "--chunks"]),
    ] {
        for flag in flags {
            for v in HUGE.iter().copied().chain(["0", "-1", "x", "1e3"]) {
                // "At most N windows" past the text's end is the text's windows, as llama-perplexity
                // reads --chunks; a count that does not parse is refused either way.
                let parses = v.parse::<u64>().is_ok_and(|n| n > 0);
                let expect = if flag == "--chunks" && parses { Expect::Either } else { Expect::Refused };
                cases.push((base.clone(), flag, vec![v], expect));
            }
        }
        cases.push((base.clone(), "-t", vec!["513"], Expect::Refused));
        cases.push((base.clone(), "-t", vec!["100000"], Expect::Refused));
    }
    // A context the text cannot fill, and one past the machine's memory.
    cases.push((eval.clone(), "-c", vec!["100000"], Expect::Refused));
    cases.push((eval.clone(), "-c", vec!["16777216"], Expect::Refused));
    let bench = vec!["bench", "GGUF", "--reps", "1", "--pp", "8", "--tg", "2", "--csv", "OUT"];
    for v in ["0", "-1", "NaN", "nan", "inf", "-inf", "0.001", "1e9", "x", ""] {
        cases.push((generate.clone(), "--cpu-quota", vec![v], Expect::Refused));
        cases.push((bench.clone(), "--cpu-quota", vec![v], Expect::Refused));
    }
    cases.push((bench.clone(), "-t", vec!["100000"], Expect::Refused));
    let sweep = vec!["sweep", "--model", "HF", "--grid", "GRID", "--out", "OUT"];
    cases.push((sweep.clone(), "-t", vec!["100000"], Expect::Refused));
    let mut runs = Vec::new();
    for (i, (base, flag, values, expect)) in cases.into_iter().enumerate() {
        let out = scratch.join(format!("flag{i}.out"));
        let mut args: Vec<String> = base
            .iter()
            .map(|a| match *a {
                "GGUF" => inputs.s("gguf"),
                "TEXT" => inputs.s("text"),
                "HF" => inputs.s("hf"),
                "GRID" => inputs.s("grid"),
                "OUT" => s(&out),
                x => x.to_string(),
            })
            .collect();
        // The flag replaces the template's own value where it has one.
        if let Some(at) = args.iter().position(|a| a == flag) {
            args.remove(at + 1);
            args.remove(at);
        }
        args.push("-q".into());
        // `--flag=-1` keeps a negative value a value; short flags take theirs as the next word.
        if flag.starts_with("--") {
            args.push(format!("{flag}={}", values[0]));
        } else {
            args.extend([flag.to_string(), values[0].to_string()]);
        }
        let what = format!("{} {flag} {}", base[0], values[0]);
        runs.push(Run { class: "flags", what, args, expect, outputs: vec![out], names: None });
    }
    runs
}

#[test]
fn every_surface_refuses_what_would_lose_data_or_mislead() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = inputs(tmp.path());
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    let missing = unclassified_flags();
    assert!(missing.is_empty(), "flags taking a value that the output-policy walk does not classify: {missing:?}");

    let mut runs = output_policy_runs(&inputs, &scratch);
    runs.extend(statistics_runs(&inputs, &scratch));
    runs.extend(grid_runs(&inputs, &scratch));
    runs.extend(task_runs(&inputs, &scratch));
    runs.extend(flag_runs(&inputs, &scratch));
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &runs {
        *classes.entry(r.class).or_default() += 1;
    }
    eprintln!("bad-input corpus, second pass: {} cases {classes:?}", runs.len());

    // One at a time: the cases share the fixture, whose hashes each one checks.
    let started = Instant::now();
    let problems: Vec<String> = runs.iter().filter_map(|r| check_run(r, &inputs)).collect();
    eprintln!("ran in {:.0} s", started.elapsed().as_secs_f64());
    assert!(problems.is_empty(), "{} of {} cases misbehaved:\n{}", problems.len(), runs.len(), problems.join("\n"));
}
