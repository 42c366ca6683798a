//! Paired statistics (#15 item 2): bootstrap intervals checked against an independent
//! implementation written here and against McNemar's / normal-theory formulas, and a sweet-spot
//! fixture where a variant is within the budget on its point estimate but not at 95% confidence,
//! which the report refuses and names.

use microscale::record::items::{ItemRecord, Items, Windows};
use microscale::record::results::read_results;
use microscale::report::markdown::{write_report, ReportOptions};
use microscale::report::paired::{load_paired, quantization_alone};
use microscale::report::sweet_spot::{sweet_spot_paired, AccBudget, Criteria, Objective};
use microscale::util::stats::{block_bootstrap, paired_bootstrap};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/results.csv");

/// The bootstrap as the documentation states it, written again from the statement: xorshift64
/// (13, 7, 17) from the seed, `B` resamples of `n` block indices `next % n`, the pooled mean of
/// each, and the 2.5% / 97.5% quantiles interpolated at `q (B − 1)`.
fn oracle(sums: &[f64], counts: &[f64], b: usize, seed: u64) -> (f64, f64, f64) {
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n = sums.len();
    let mut stats = Vec::new();
    for _ in 0..b {
        let (mut s, mut c) = (0.0, 0.0);
        for _ in 0..n {
            let i = (next() % n as u64) as usize;
            s += sums[i];
            c += counts[i];
        }
        stats.push(s / c);
    }
    stats.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| {
        let h = p * (b - 1) as f64;
        let lo = h.floor() as usize;
        stats[lo] + (h - lo as f64) * (stats[(lo + 1).min(b - 1)] - stats[lo])
    };
    (sums.iter().sum::<f64>() / counts.iter().sum::<f64>(), q(0.025), q(0.975))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// Per-window NLL sums of a variant whose mean per-token log-ratio over the baseline is `ln_ratio`,
/// each window off by `spread` nats per token, alternately up and down (so the mean stays).
fn windows_around(base_nll_per_token: f64, ln_ratio: f64, spread: f64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let base = vec![255.0 * base_nll_per_token; n];
    let var =
        (0..n).map(|w| 255.0 * (base_nll_per_token + ln_ratio + if w % 2 == 0 { spread } else { -spread })).collect();
    (base, var)
}

#[test]
fn window_bootstrap_equals_the_independent_implementation_and_normal_theory() {
    // Fixture rows: 12 windows of a variant against its baseline, differences summed per window.
    let (base, var) = windows_around(3.0, 0.04, 0.02, 12);
    let mut var = var;
    var[3] += 9.0; // one hard window
    let diffs: Vec<f64> = var.iter().zip(&base).map(|(v, b)| v - b).collect();
    let counts = vec![255.0; 12];
    let got = paired_bootstrap(&diffs, &counts).unwrap();
    let (point, lo, hi) = oracle(&diffs, &counts, 2000, 0x5EED_0015);
    assert!(close(got.estimate, point, 1e-12), "{} vs {point}", got.estimate);
    let (glo, ghi) = got.interval95();
    assert!(close(glo, lo, 1e-12) && close(ghi, hi, 1e-12), "[{glo}, {ghi}] vs [{lo}, {hi}]");
    assert!(lo < point && point < hi);

    // Many windows: the percentile interval approaches mean ± 1.96 sd / sqrt(n).
    let n = 400;
    let d: Vec<f64> = (0..n).map(|i| ((i * 7919 % 101) as f64 - 50.0) / 25.0 + 0.3).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let half = 1.96 * sd / (n as f64).sqrt();
    let b = block_bootstrap(&d, &vec![1.0; n], 2000, 99).unwrap();
    let (lo, hi) = b.interval95();
    assert!(
        close(lo, mean - half, 0.12 * half) && close(hi, mean + half, 0.12 * half),
        "[{lo}, {hi}] vs {mean}±{half}"
    );
}

#[test]
fn accuracy_bootstrap_matches_mcnemar_variance() {
    // 2000 paired items: b = 150 only the variant gets right, c = 90 only the baseline does.
    let (n, b, c) = (2000usize, 150usize, 90usize);
    let diffs: Vec<f64> = (0..n)
        .map(|i| {
            if i < b {
                1.0
            } else if i < b + c {
                -1.0
            } else {
                0.0
            }
        })
        .collect();
    let got = paired_bootstrap(&diffs, &vec![1.0; n]).unwrap();
    // McNemar's paired difference: d = (b - c) / n, var(d) = ((b + c) / n - d^2) / n.
    let d = (b as f64 - c as f64) / n as f64;
    let half = 1.96 * (((b + c) as f64 / n as f64 - d * d) / n as f64).sqrt();
    let (lo, hi) = got.interval95();
    assert!(close(got.estimate, d, 1e-12));
    assert!(close(lo, d - half, 0.1 * half) && close(hi, d + half, 0.1 * half), "[{lo}, {hi}] vs {d}±{half}");
    // And exactly the independent resampler's interval.
    let (_, olo, ohi) = oracle(&diffs, &vec![1.0; n], 2000, 0x5EED_0015);
    assert!(close(lo, olo, 1e-12) && close(hi, ohi, 1e-12));
}

fn nll_record(name: &str, sums: Vec<f64>) -> ItemRecord {
    ItemRecord {
        variant: name.into(),
        perplexity: Some(Windows { tokens_sha256: "fixture-text".into(), tokens_per_window: 255, sums }),
        ..Default::default()
    }
}

/// SST-2 outcomes over 10,000 items: the baseline right on the first 8853 (88.53%, its CSV value);
/// stock-q4_k_m wrong on 563 of those and right on 500 the baseline misses (87.90%, its CSV value).
fn sst2(variant: bool) -> Items {
    let correct = (0..10_000)
        .map(|i| {
            let base = i < 8853;
            let right = if variant { (base && i >= 563) || (8853..9353).contains(&i) } else { base };
            if right {
                '1'
            } else {
                '0'
            }
        })
        .collect();
    Items { items_sha256: "fixture-sst2".into(), correct }
}

/// A sweep directory: the fixture's results.csv and item files for the variants that matter.
/// q4_k_s: +4.45% perplexity on the point estimate, but spread over windows so that its interval
/// crosses +5%; q4_k_m: +3.31%, consistent over windows; stock-q4_k_m: 0.63 points of SST-2 lost on
/// the point estimate, with an interval reaching past 1 point.
fn sweep_dir() -> (tempfile::TempDir, Vec<f64>, Vec<f64>, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(FIXTURE, dir.path().join("results.csv")).unwrap();
    let b = 20.412f64.ln();
    let (base, q4ks) = windows_around(b, (21.320f64 / 20.412).ln(), 0.03, 20);
    let (_, q4km) = windows_around(b, (21.087f64 / 20.412).ln(), 0.002, 20);
    let q8 = sweep_q8_windows();
    let (_, stock) = windows_around(b, (21.102f64 / 20.412).ln(), 0.002, 20);
    let items = dir.path().join("items");
    let mut baseline = nll_record("smollm2-135m-f32", base.clone());
    baseline.accuracy.insert("sst2_acc".into(), sst2(false));
    baseline.write(&items.join("smollm2-135m-f32.json")).unwrap();
    nll_record("q4_k_s", q4ks.clone()).write(&items.join("q4_k_s.json")).unwrap();
    nll_record("q4_k_m", q4km.clone()).write(&items.join("q4_k_m.json")).unwrap();
    nll_record("q8_0", q8).write(&items.join("q8_0.json")).unwrap();
    let mut s = nll_record("stock-q4_k_m", stock);
    s.accuracy.insert("sst2_acc".into(), sst2(true));
    s.write(&items.join("stock-q4_k_m.json")).unwrap();
    (dir, base, q4ks, q4km)
}

fn sweep_q8_windows() -> Vec<f64> {
    windows_around(20.412f64.ln(), (20.431f64 / 20.412).ln(), 0.0005, 20).1
}

fn diffs(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

#[test]
fn the_report_refuses_a_variant_within_budget_on_its_point_estimate_only() {
    let (dir, base, q4ks, q4km) = sweep_dir();
    let counts = vec![255.0; 20];
    // The fixture does what it claims, by the independent resampler.
    let (p, _, hi) = oracle(&diffs(&q4ks, &base), &counts, 2000, 0x5EED_0015);
    assert!(p.exp() < 1.05 && hi.exp() > 1.05, "q4_k_s: point ×{}, upper ×{}", p.exp(), hi.exp());
    let (kp, klo, khi) = oracle(&diffs(&q4km, &base), &counts, 2000, 0x5EED_0015);
    assert!(khi.exp() < 1.05);

    let r = read_results(&dir.path().join("results.csv")).unwrap();
    let paired = load_paired(dir.path(), &r).unwrap();
    let c = Criteria::default();
    let name = |i: usize| r.variants[i].name.as_str();
    for profile in ["pi4-4gb", "pi5-8gb"] {
        let s = sweet_spot_paired(&r, &paired, profile, &c);
        // Without item files q4_k_s is the pick (tests/it/report.rs); at 95% it is q4_k_m.
        assert_eq!(name(s.pick.clone().unwrap()), "q4_k_m", "{profile}");
        assert!(s.point_only.iter().any(|(i, why)| name(*i) == "q4_k_s" && why.contains("upper end")), "{profile}");
    }

    // The report says so, with the intervals the independent resampler gives.
    let md = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    let section: Vec<&str> = md
        .lines()
        .skip_while(|l| *l != "## Sweet spot per device profile")
        .take_while(|l| !l.starts_with("## Paired"))
        .collect();
    let pi4 = section.iter().position(|l| l.starts_with("- **pi4-4gb**: `q4_k_m` (microscale)")).expect(&md);
    let pct = |x: f64| format!("{:+.2}%", 100.0 * (x.exp() - 1.0));
    let expected = format!("PPL {} [{}, {}]", pct(kp), pct(klo), pct(khi));
    assert!(section[pi4 + 1].starts_with("  - at 95% confidence against the baseline: "), "{}", section[pi4 + 1]);
    assert!(section[pi4 + 1].contains(&expected), "{} lacks {expected}", section[pi4 + 1]);
    assert!(section[pi4 + 1].contains("confidence within budget 100.0%"), "{}", section[pi4 + 1]);
    // (Below it, layers-2-q8_0 is within the mean-accuracy budget on its point estimates, without an
    // item file, and said so.)
    let refused = section[pi4 + 2..pi4 + 4]
        .iter()
        .find(|l| l.starts_with("  - within budget on the point estimate only"))
        .expect(section[pi4 + 2]);
    assert!(refused.starts_with("  - within budget on the point estimate only (not chosen): `q4_k_s` ("), "{refused}");
    assert!(refused.contains(&format!("upper end ×{:.4}", hi.exp())), "{refused}");
    assert!(md.contains("Verdicts are at 95% confidence"), "{md}");
    // The paired table: each against the baseline, and q4_k_m against the nearest stock quant.
    let row = md.lines().find(|l| l.starts_with("| `q4_k_s` | `smollm2-135m-f32` | +4.45% [")).expect(&md);
    assert!(row.contains("| point estimate only (confidence "), "{row}");
    assert!(md.contains("| `q4_k_m` | `stock-q4_k_m` |"), "{md}");

    // Speed on pi5 picks stock-q4_k_m on the point estimates; its SST-2 interval reaches past the
    // 1-point budget (McNemar: d = -63/10000, half-width 1.96 sqrt((1063/1e4 - d^2)/1e4) ≈ 0.64).
    let speed = Criteria { objective: Objective::Speed, ..c };
    let s = sweet_spot_paired(&r, &paired, "pi5-8gb", &speed);
    assert_ne!(name(s.pick.clone().unwrap()), "stock-q4_k_m");
    let why = &s.point_only.iter().find(|(i, _)| name(*i) == "stock-q4_k_m").unwrap().1;
    let acc_diffs: Vec<f64> = sst2(true).outcomes().iter().zip(sst2(false).outcomes()).map(|(a, b)| a - b).collect();
    let (d, lo, _) = oracle(&acc_diffs, &vec![1.0; acc_diffs.len()], 2000, 0x5EED_0015);
    assert!(d > -0.01 && lo < -0.01, "fixture: {d} {lo}");
    // One task only: the mean accuracy is SST-2's, its interval the item bootstrap's.
    assert!(why.contains(&format!("the mean accuracy's 95% interval reaches {:.1} points", -100.0 * lo)), "{why}");

    // At a glance: the smallest within +1% is q8_0, within +5% q4_k_m (q4_k_s refused as above),
    // with the intervals the independent resampler gives.
    let glance = md.lines().find(|l| l.starts_with("| pi4-4gb | ")).expect(&md);
    let cells: Vec<&str> = glance.trim_matches('|').split(" | ").map(str::trim).collect();
    let q8 = sweep_q8_windows();
    let (p8, lo8, hi8) = oracle(&diffs(&q8, &base), &counts, 2000, 0x5EED_0015);
    assert_eq!(cells[1], format!("`q8_0` (none, q8_0): 138.18 MiB, PPL {} [{}, {}]", pct(p8), pct(lo8), pct(hi8)));
    assert!(cells[2].starts_with("`q4_k_m` (none, q4_k_m): 100.59 MiB, PPL "), "{glance}");
    assert!(cells[3].contains(" t/s"), "{glance}");

    // Deterministic: the same files give the same report, byte for byte.
    let again = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    assert_eq!(md, again);
}

#[test]
fn without_item_files_the_verdicts_fall_back_to_point_estimates_and_say_so() {
    let (dir, ..) = sweep_dir();
    std::fs::remove_dir_all(dir.path().join("items")).unwrap();
    let md = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    assert!(md.lines().any(|l| l.starts_with("- **pi4-4gb**: `q4_k_s` (microscale)")), "{md}");
    assert!(md.contains("No per-item files (`items/`)"), "{md}");
    assert!(md.contains("Judged on the point estimates"), "{md}");
    assert!(!md.contains("## Paired comparisons"));
}

#[test]
fn unpairable_and_malformed_item_files() {
    let (dir, ..) = sweep_dir();
    // A stock quant scored on other tokens: no perplexity interval against the baseline, said so.
    let p = dir.path().join("items/stock-q4_k_m.json");
    let text = std::fs::read_to_string(&p).unwrap().replace("fixture-text", "other-text");
    std::fs::write(&p, text).unwrap();
    let md = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    assert!(
        md.contains("- not paired: `stock-q4_k_m` against `smollm2-135m-f32`: perplexity: different tokens"),
        "{md}"
    );

    // A malformed file is an error naming it, from the library and from the command (one line).
    std::fs::write(dir.path().join("items/q8_0.json"), "{\"format\": 3").unwrap();
    let e = format!("{:#}", write_report(dir.path(), &ReportOptions::default()).unwrap_err());
    assert!(e.contains("items/q8_0.json: not a microscale item file"), "{e}");
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_microscale")).arg("report").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("items/q8_0.json: not a microscale item file"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A file holding another variant's items is refused too.
    let q4 = std::fs::read_to_string(dir.path().join("items/q4_k_m.json")).unwrap();
    std::fs::write(dir.path().join("items/q8_0.json"), q4).unwrap();
    let e = format!("{:#}", write_report(dir.path(), &ReportOptions::default()).unwrap_err());
    assert!(e.contains("items/q8_0.json: holds variant `q4_k_m`, not `q8_0`"), "{e}");
}

fn kld_windows(per_token: impl Fn(usize) -> f64) -> Windows {
    Windows {
        tokens_sha256: "fixture-text".into(),
        tokens_per_window: 255,
        sums: (0..20).map(|w| 255.0 * per_token(w)).collect(),
    }
}

#[test]
fn pruning_is_judged_against_its_quantization_alone() {
    let (dir, ..) = sweep_dir();
    let r = read_results(&dir.path().join("results.csv")).unwrap();
    let index = |name: &str| r.variants.iter().position(|v| v.name == name).unwrap();
    // The same type without pruning, never a stock row or another type; a failed variant has none.
    assert_eq!(quantization_alone(&r, index("wanda-0.2-q4_k_m")), Some(index("q4_k_m")));
    assert_eq!(quantization_alone(&r, index("layers-2-q8_0")), Some(index("q8_0")));
    assert_eq!(quantization_alone(&r, index("magnitude-0.5-q4_k_m")), None);
    assert_eq!(quantization_alone(&r, index("q4_k_m")), None);

    // On the point estimates (no KLD windows yet): both pruned files are smaller and worse.
    let md = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    let row = |md: &str, name: &str| {
        let section = &md[md.find("## Pruning combined with quantization").expect(md)..];
        section.lines().find(|l| l.starts_with(&format!("| `{name}` | `"))).unwrap().to_string()
    };
    let wanda = row(&md, "wanda-0.2-q4_k_m");
    let size = format!("{:+.1}%", 100.0 * (89128960.0 / 105471232.0 - 1.0));
    assert!(wanda.starts_with(&format!("| `wanda-0.2-q4_k_m` | `q4_k_m` | {size} | ")), "{wanda}");
    assert!(wanda.contains(&format!("| {:+.4} |", 0.1420 - 0.0311)), "{wanda}");
    assert!(wanda.contains("| a trade: a smaller file, but the loss is higher (point estimate) |"), "{wanda}");
    // Nothing without pruning is as small as Wanda's 85 MiB; under dropped layers' 122 MiB the lowest
    // KLD without pruning is q4_k_m's 0.0311, above their 0.0288.
    assert!(wanda.ends_with("| none that small: pruning is ahead |"), "{wanda}");
    let layers = row(&md, "layers-2-q8_0");
    assert!(layers.ends_with("| `q4_k_m` (100.59 MiB), KLD 0.0311, higher: pruning is ahead |"), "{layers}");
    assert!(
        md.contains(
            "Pruning beats its own quantization alone in 0 of 2 pair(s); 2 pruned variant(s) have a lower KLD than \
             every variant without pruning whose file is no larger (point estimates)."
        ),
        "{md}"
    );

    // Paired: Wanda's KLD windows straddle Q4_K_M's (no worse at 95%), so it beats it; the
    // dropped layers' KLD is higher on every window, a trade. Intervals as the oracle gives them.
    let items = dir.path().join("items");
    let q4 = |w: usize| 0.0311 + if w.is_multiple_of(3) { 0.004 } else { -0.002 };
    let wanda_kld = |w: usize| q4(w) + 0.0001 + if w.is_multiple_of(2) { 0.001 } else { -0.001 };
    let mut rec = ItemRecord::read(&items.join("q4_k_m.json")).unwrap().unwrap();
    rec.kld = Some(kld_windows(q4));
    rec.write(&items.join("q4_k_m.json")).unwrap();
    ItemRecord { variant: "wanda-0.2-q4_k_m".into(), kld: Some(kld_windows(wanda_kld)), ..Default::default() }
        .write(&items.join("wanda-0.2-q4_k_m.json"))
        .unwrap();
    let mut rec = ItemRecord::read(&items.join("q8_0.json")).unwrap().unwrap();
    rec.kld = Some(kld_windows(|_| 0.0004));
    rec.write(&items.join("q8_0.json")).unwrap();
    ItemRecord {
        variant: "layers-2-q8_0".into(),
        kld: Some(kld_windows(|w| 0.0288 + 0.001 * (w % 2) as f64)),
        ..Default::default()
    }
    .write(&items.join("layers-2-q8_0.json"))
    .unwrap();
    let md = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    let counts = vec![255.0; 20];
    let d: Vec<f64> = (0..20).map(|w| 255.0 * (wanda_kld(w) - q4(w))).collect();
    let (p, lo, hi) = oracle(&d, &counts, 2000, 0x5EED_0015);
    assert!(lo < 0.0 && hi > 0.0, "fixture: {lo} {hi}");
    let wanda = row(&md, "wanda-0.2-q4_k_m");
    assert!(wanda.contains(&format!("| {p:+.4} [{lo:+.4}, {hi:+.4}] |")), "{wanda}");
    assert!(wanda.contains("| beats it: a smaller file and the loss is the same within the interval |"), "{wanda}");
    let layers = row(&md, "layers-2-q8_0");
    assert!(layers.contains("| a trade: a smaller file, but the loss is higher at 95% |"), "{layers}");
    assert!(md.contains("Pruning beats its own quantization alone in 1 of 2 pair(s);"), "{md}");
}

/// The mean of several tasks' mean differences, bootstrapped as documented, written again from the
/// statement: per resample, each group in turn draws its `n_g` items (`next % n_g`) from one
/// xorshift64 stream; the statistic is the unweighted mean of the group means.
fn oracle_mean(groups: &[Vec<f64>], b: usize, seed: u64) -> (f64, f64, f64) {
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut stats = Vec::new();
    for _ in 0..b {
        let mut total = 0.0;
        for g in groups {
            let n = g.len() as u64;
            total += (0..g.len()).map(|_| g[(next() % n) as usize]).sum::<f64>() / g.len() as f64;
        }
        stats.push(total / groups.len() as f64);
    }
    stats.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| {
        let h = p * (b - 1) as f64;
        let lo = h.floor() as usize;
        stats[lo] + (h - lo as f64) * (stats[(lo + 1).min(b - 1)] - stats[lo])
    };
    let est = groups.iter().map(|g| g.iter().sum::<f64>() / g.len() as f64).sum::<f64>() / groups.len() as f64;
    (est, q(0.025), q(0.975))
}

fn outcomes(right: impl Fn(usize) -> bool, n: usize) -> Items {
    let correct = (0..n).map(|i| if right(i) { '1' } else { '0' }).collect();
    Items { items_sha256: format!("fixture-{n}"), correct }
}

#[test]
fn a_mean_accuracy_budget_resolves_what_each_task_alone_cannot() {
    let (dir, ..) = sweep_dir();
    let items = dir.path().join("items");
    // q4_k_m against the baseline, no better and no worse on average: SST-2 (10,000 items) with
    // 1000 items flipped each way, ARC-Easy (1000 items) with 20 flipped each way.
    let base_arc = |i: usize| i < 520;
    let q4_arc = |i: usize| (20..540).contains(&i);
    let q4_sst2 = |i: usize| (1000..9853).contains(&i);
    let mut base = ItemRecord::read(&items.join("smollm2-135m-f32.json")).unwrap().unwrap();
    base.accuracy.insert("arc_easy_acc".into(), outcomes(base_arc, 1000));
    base.write(&items.join("smollm2-135m-f32.json")).unwrap();
    let mut q4 = ItemRecord::read(&items.join("q4_k_m.json")).unwrap().unwrap();
    q4.accuracy.insert("arc_easy_acc".into(), outcomes(q4_arc, 1000));
    q4.accuracy.insert("sst2_acc".into(), Items { items_sha256: "fixture-sst2".into(), ..outcomes(q4_sst2, 10_000) });
    q4.write(&items.join("q4_k_m.json")).unwrap();

    // By the independent resamplers: each task alone cannot show a drop within 1 point at 95%
    // (ARC-Easy's interval reaches past it), their mean can.
    let diff = |v: &dyn Fn(usize) -> bool, b: &dyn Fn(usize) -> bool, n: usize| -> Vec<f64> {
        (0..n).map(|i| f64::from(u8::from(v(i))) - f64::from(u8::from(b(i)))).collect()
    };
    let arc = diff(&q4_arc, &base_arc, 1000);
    let sst2 = diff(&q4_sst2, &|i| i < 8853, 10_000);
    let (_, arc_lo, _) = oracle(&arc, &vec![1.0; 1000], 2000, 0x5EED_0015);
    let (_, sst2_lo, _) = oracle(&sst2, &vec![1.0; 10_000], 2000, 0x5EED_0015);
    // The groups in the item file's (sorted) metric order.
    let (mean, lo, hi) = oracle_mean(&[arc, sst2], 2000, 0x5EED_0015);
    assert!(arc_lo < -0.01 && sst2_lo > -0.01 && lo > -0.01, "fixture: {arc_lo} {sst2_lo} {lo}");

    let r = read_results(&dir.path().join("results.csv")).unwrap();
    let paired = load_paired(dir.path(), &r).unwrap();
    let name = |i: usize| r.variants[i].name.as_str();
    let q4_index = r.variants.iter().position(|v| v.name == "q4_k_m").unwrap();
    let cmp = paired.vs_baseline[q4_index].as_ref().unwrap();
    let boot = cmp.acc_mean.as_ref().unwrap();
    assert!(close(boot.estimate, mean, 1e-12) && close(boot.interval95().0, lo, 1e-12), "{boot:?}");
    assert!(close(boot.interval95().1, hi, 1e-12));

    // The default budget (the mean) picks q4_k_m; a per-task budget refuses it for ARC-Easy.
    let mean_pick = sweet_spot_paired(&r, &paired, "pi4-4gb", &Criteria::default());
    assert_eq!(name(mean_pick.pick.clone().unwrap()), "q4_k_m");
    let each = Criteria { acc_budget: AccBudget::Each, ..Criteria::default() };
    let each_pick = sweet_spot_paired(&r, &paired, "pi4-4gb", &each);
    assert_ne!(name(each_pick.pick.clone().unwrap()), "q4_k_m");
    let why = &each_pick.point_only.iter().find(|(i, _)| name(*i) == "q4_k_m").unwrap().1;
    assert!(why.contains(&format!("arc_easy_acc's 95% interval reaches {:.1} points", -100.0 * arc_lo)), "{why}");

    // The report states the budget and the mean's interval.
    let md = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    assert!(md.contains("the mean of sst2_acc, arc_easy_acc, arc_challenge_acc at most 1.0 point(s) below"), "{md}");
    let pts = |x: f64| format!("{:+.1}", 100.0 * x);
    let expected = format!("mean accuracy {} [{}, {}] points", pts(mean), pts(lo), pts(hi));
    let line = md.lines().find(|l| l.starts_with("- **pi4-4gb**: `q4_k_m`")).expect(&md);
    let verdict = md.lines().skip_while(|l| *l != line).nth(1).unwrap();
    assert!(verdict.contains(&expected), "{verdict} lacks {expected}");
}
