//! The `report` stage: results.csv in, report.md and PNG plots out, with every stated number read
//! back from the markdown and checked against the CSV.

use microscale::record::results::{parse_csv, parse_results, read_results, Kind};
use microscale::report::markdown::{render_markdown, write_report, ReportOptions};
use microscale::report::pareto::{pareto_min_max, pareto_min_min};
use microscale::report::plots::scatters;
use microscale::report::sweet_spot::{sweet_spot, AccBudget, Criteria, Objective};
use regex::Regex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/results.csv");

/// The fixture's raw fields by variant name and column name (through the record splitter only, so
/// the expectations below do not depend on the typed parser under test).
fn raw() -> HashMap<String, HashMap<String, String>> {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let recs = parse_csv(&text, Path::new(FIXTURE)).unwrap();
    let header = &recs[0].1;
    recs[1..].iter().map(|(_, r)| (r[0].clone(), header.iter().cloned().zip(r.iter().cloned()).collect())).collect()
}

fn num(raw: &HashMap<String, HashMap<String, String>>, variant: &str, col: &str) -> f64 {
    raw[variant][col].parse().unwrap_or_else(|_| panic!("{variant}.{col}"))
}

fn fixture_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(FIXTURE, dir.path().join("results.csv")).unwrap();
    dir
}

fn sweet_line<'a>(md: &'a str, profile: &str) -> &'a str {
    let prefix = format!("- **{profile}**: ");
    let lines: Vec<&str> = md.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "one sweet-spot line for {profile}:\n{md}");
    lines[0]
}

/// (variant, kind, MiB, PPL, ΔPPL %, baseline PPL, tg t/s) as stated on a sweet-spot line.
fn parse_sweet(line: &str) -> (String, String, f64, f64, f64, f64, f64) {
    let re = Regex::new(
        r"^- \*\*[^*]+\*\*: `([^`]+)` \(([^)]+)\) — ([\d.]+) MiB, [\d.]+ bpw, PPL ([\d.]+) \(([+-][\d.]+)% vs baseline ([\d.]+)\),.* tg ([\d.]+) t/s",
    )
    .unwrap();
    let c = re.captures(line).unwrap_or_else(|| panic!("unexpected sweet-spot line: {line}"));
    let f = |i: usize| c[i].parse::<f64>().unwrap();
    (c[1].to_string(), c[2].to_string(), f(3), f(4), f(5), f(6), f(7))
}

fn check_sweet(line: &str, raw: &HashMap<String, HashMap<String, String>>, profile: &str, variant: &str, kind: &str) {
    let (name, k, mib, ppl, dppl, bppl, tg) = parse_sweet(line);
    assert_eq!(name, variant, "{line}");
    assert_eq!(k, kind, "{line}");
    let size = num(raw, variant, "file_size_bytes");
    assert_eq!(format!("{mib:.2}"), format!("{:.2}", size / 1048576.0), "{line}");
    assert_eq!(format!("{ppl:.3}"), format!("{:.3}", num(raw, variant, "ppl")), "{line}");
    let base = num(raw, "smollm2-135m-f32", "ppl");
    assert_eq!(format!("{bppl:.3}"), format!("{base:.3}"), "{line}");
    assert_eq!(format!("{dppl:+.2}"), format!("{:+.2}", 100.0 * (num(raw, variant, "ppl") / base - 1.0)), "{line}");
    assert_eq!(format!("{tg:.2}"), format!("{:.2}", num(raw, variant, &format!("{profile}:tg_tps"))), "{line}");
}

#[test]
fn report_renders_with_plots_and_correct_numbers() {
    let dir = fixture_dir();
    let out =
        write_report(dir.path(), &ReportOptions { caveats: vec!["Tiny eval sets.".into()], ..Default::default() })
            .unwrap();
    assert_eq!(out, dir.path().join("report.md"));
    let md = std::fs::read_to_string(&out).unwrap();
    let raw = raw();

    // Provenance, straight from the rows.
    assert!(md.contains("- microscale version(s): `0.1.0`"), "{md}");
    assert!(md.contains("- llama.cpp version(s): `0.1.161`"), "{md}");
    assert!(md.contains("- dates: 2025-06-01T09:12:44Z to 2025-06-01T11:52:19Z"), "{md}");
    assert!(md.contains("eval_chunks `8`; eval_limit `200`"), "{md}");
    assert!(md.contains("- Tiny eval sets."));
    assert!(md.contains("dequantization of already-quantized weights"), "the baseline recipe says dequantization");

    // Sweet spots: q4_k_s is the smallest within budget on both profiles (stock-q4_0 is smaller
    // but +7% PPL; wanda-0.2 is smaller but +17% PPL). layers-2 loses 1.4 points of sst2 but 0.6 on
    // the tasks' mean, so it is within the (default) mean-accuracy budget, not within a per-task one.
    for p in ["pi4-4gb", "pi5-8gb"] {
        check_sweet(sweet_line(&md, p), &raw, p, "q4_k_s", "microscale");
    }
    assert!(sweet_line(&md, "pi4-4gb").ends_with("5 of 7 fitting variant(s) within the budget"));
    // The baseline fits the larger device only, and qualifies there.
    assert!(sweet_line(&md, "pi5-8gb").ends_with("6 of 8 fitting variant(s) within the budget"));
    let each = ReportOptions { acc_budget: AccBudget::Each, ..Default::default() };
    let md_each = render_markdown(&read_results(Path::new(FIXTURE)).unwrap(), &each, &[]);
    assert!(sweet_line(&md_each, "pi4-4gb").ends_with("4 of 7 fitting variant(s) within the budget"), "{md_each}");
    assert!(md_each.contains("sst2_acc at most 1.0 point(s) below the baseline's 88.5% (≥ 87.5%)"), "{md_each}");
    assert!(md.contains("llama.cpp's stock quants"));

    // The full table: find rows by variant and columns by header.
    let table: Vec<Vec<String>> = md
        .lines()
        .skip_while(|l| !l.starts_with("| variant | kind | recipe"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect();
    let head = &table[0];
    let col = |name: &str| head.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name}: {head:?}"));
    assert_eq!(table.len(), 2 + raw.len(), "header, rule and one row per variant");
    let base_ppl = num(&raw, "smollm2-135m-f32", "ppl");
    for row in &table[2..] {
        let name = row[0].trim_start_matches('`').split('`').next().unwrap();
        let r = &raw[name];
        if !r["error"].is_empty() {
            assert!(row[0].ends_with("(failed)"));
            assert_eq!(row[col("size MiB")], "—");
            continue;
        }
        let size: f64 = r["file_size_bytes"].parse().unwrap();
        assert_eq!(row[col("size MiB")], format!("{:.2}", size / 1048576.0), "{name}");
        let ppl: f64 = r["ppl"].parse().unwrap();
        let se: f64 = r["ppl_stderr"].parse().unwrap();
        assert_eq!(row[col("PPL ± se")], format!("{ppl:.3} ± {se:.3}"), "{name}");
        assert_eq!(row[col("ΔPPL")], format!("{:+.2}%", 100.0 * (ppl / base_ppl - 1.0)), "{name}");
        let acc: f64 = r["arc_easy_acc"].parse().unwrap();
        let acc_se: f64 = r["arc_easy_acc_stderr"].parse().unwrap();
        assert_eq!(row[col("arc_easy_acc ± se")], format!("{:.1}% ± {:.1}", 100.0 * acc, 100.0 * acc_se), "{name}");
        for p in ["pi4-4gb", "pi5-8gb"] {
            let cellv = &row[col(&format!("{p} tg t/s"))];
            if r[&format!("{p}:status")] == "oom" {
                assert_eq!(cellv, "does not fit", "{name} {p}");
            } else {
                let tg: f64 = r[&format!("{p}:tg_tps")].parse().unwrap();
                assert!(cellv.starts_with(&format!("{tg:.2} ± ")), "{name} {p}: {cellv}");
            }
        }
    }

    // The failed variant is listed with its error (quotes and commas intact) and is not plotted.
    assert!(md.contains("## Failed variants"));
    let failed = md.lines().skip_while(|l| *l != "## Failed variants").find(|l| l.starts_with("| `magnitude")).unwrap();
    assert!(failed.contains(&raw["magnitude-0.5-q4_k_m"]["error"]), "{failed}");
    assert!(failed.contains("| 8 |"), "line 8 of the file: {failed}");

    // Pareto frontier (PPL vs size): stock-q4_0 (smallest with PPL), wanda, q4_k_s, q4_k_m,
    // layers-2, q8_0, baseline... computed here by hand from the fixture.
    let frontier = md.lines().find(|l| l.starts_with("- perplexity: ")).unwrap();
    let names: Vec<&str> = frontier.split(" → ").map(|s| s.split('`').nth(1).unwrap()).collect();
    assert_eq!(
        names,
        ["wanda-0.2-q4_k_m", "stock-q4_0", "q4_k_s", "q4_k_m", "layers-2-q8_0", "q8_0", "smollm2-135m-f32"]
    );
    assert!(frontier.contains("`stock-q4_0` (91.78 MiB, PPL 21.901, llama.cpp stock)"), "{frontier}");

    // Plots: exist, are PNGs of the right size, not blank, and are linked from the report.
    let plots = dir.path().join("plots");
    let mut expected = vec!["ppl_vs_size.png".to_string(), "kld_vs_size.png".to_string()];
    for m in ["sst2_acc", "arc_easy_acc", "arc_easy_acc_norm", "arc_challenge_acc", "arc_challenge_acc_norm"] {
        expected.push(format!("{m}_vs_size.png"));
    }
    expected.push("tg_vs_size_pi4-4gb.png".into());
    expected.push("tg_vs_size_pi5-8gb.png".into());
    for f in &expected {
        let p = plots.join(f);
        check_png(&p);
        assert!(md.contains(&format!("](plots/{f})")), "{f} linked");
    }
    assert_eq!(std::fs::read_dir(&plots).unwrap().count(), expected.len(), "no temporary files left");

    // Writing again over an existing report works.
    write_report(dir.path(), &ReportOptions::default()).unwrap();
}

fn check_png(p: &PathBuf) {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", p.display());
    assert!(bytes.len() > 20_000, "{}: only {} bytes", p.display(), bytes.len());
    let dec = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(info.width >= 800 && info.height >= 500);
    // Not blank: a good share of non-white pixels (axes, text, markers).
    let dark = buf.chunks(3).filter(|p| p.iter().any(|&c| c < 200)).count();
    assert!(dark > 2_000, "{}: {dark} non-white pixels", p.display());
}

#[test]
fn speed_objective_can_pick_a_stock_quant() {
    let r = read_results(Path::new(FIXTURE)).unwrap();
    let raw = raw();
    let c = Criteria { objective: Objective::Speed, ..Criteria::default() };
    // pi5: stock-q4_k_m has the highest tg within budget; pi4: q4_k_s does.
    let s = sweet_spot(&r, "pi5-8gb", &c);
    assert_eq!(r.variants[s.pick.clone().unwrap()].name, "stock-q4_k_m");
    assert_eq!(r.variants[s.pick.unwrap()].kind, Kind::Stock);
    let s = sweet_spot(&r, "pi4-4gb", &c);
    assert_eq!(r.variants[s.pick.unwrap()].name, "q4_k_s");

    let opts = ReportOptions { objective: Objective::Speed, ..Default::default() };
    let md = render_markdown(&r, &opts, &scatters(&r, &opts.criteria()));
    check_sweet(sweet_line(&md, "pi5-8gb"), &raw, "pi5-8gb", "stock-q4_k_m", "llama.cpp stock");
    check_sweet(sweet_line(&md, "pi4-4gb"), &raw, "pi4-4gb", "q4_k_s", "microscale");
    assert!(md.contains("fastest generation"));
}

#[test]
fn tighter_budget_and_no_qualifier_give_reasons() {
    let r = read_results(Path::new(FIXTURE)).unwrap();
    // +1% PPL: only q8_0 (and the baseline where it fits) qualify.
    let c = Criteria { max_ppl_increase: 0.01, ..Criteria::default() };
    assert_eq!(r.variants[sweet_spot(&r, "pi4-4gb", &c).pick.unwrap()].name, "q8_0");
    // Nothing within -0.1% PPL on pi4 (the baseline does not fit there).
    let c = Criteria { max_ppl_increase: -0.001, ..Criteria::default() };
    let why = sweet_spot(&r, "pi4-4gb", &c).pick.unwrap_err();
    assert!(why.contains("7 variant(s) fit pi4-4gb but none is within the quality budget"), "{why}");
    assert!(why.contains("`q8_0`: perplexity 20.43"), "{why}");
    // The layers-2 variant loses 1.41, 0.31 and 0.20 points: within a 1-point budget on the mean
    // (0.64), not on each task; rejected for its accuracy, not its perplexity.
    use microscale::report::sweet_spot::quality_check;
    let c = Criteria::default();
    assert_eq!(quality_check(&r, &r.variants[5], &c), Ok(()));
    let each = Criteria { acc_budget: AccBudget::Each, ..c };
    assert!(quality_check(&r, &r.variants[5], &each).unwrap_err().starts_with("sst2_acc 87.1%"));
    let half = Criteria { max_acc_drop: 0.005, ..c };
    let why = quality_check(&r, &r.variants[5], &half).unwrap_err();
    assert_eq!(why, "the mean accuracy is 0.6 points below the baseline's");
    // Unknown profile.
    assert!(sweet_spot(&r, "jetson", &c).pick.unwrap_err().contains("no variant was benchmarked on jetson"));
}

#[test]
fn no_baseline_still_renders() {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let text: String = text.lines().filter(|l| !l.starts_with("smollm2-135m-f32,")).map(|l| format!("{l}\n")).collect();
    let r = parse_results(&text, Path::new("x.csv")).unwrap();
    assert!(r.baseline().is_none());
    let opts = ReportOptions::default();
    let md = render_markdown(&r, &opts, &scatters(&r, &opts.criteria()));
    assert!(sweet_line(&md, "pi4-4gb").contains("none — results.csv has no baseline row"), "{md}");
    assert!(md.contains("- baseline: none"));
}

#[test]
fn typed_rows() {
    let r = read_results(Path::new(FIXTURE)).unwrap();
    assert_eq!(r.profiles, ["pi4-4gb", "pi5-8gb"]);
    assert_eq!(
        r.acc_metrics,
        ["sst2_acc", "arc_easy_acc", "arc_easy_acc_norm", "arc_challenge_acc", "arc_challenge_acc_norm"]
    );
    assert_eq!(r.primary_acc_metrics(), ["sst2_acc", "arc_easy_acc", "arc_challenge_acc"]);
    let b = r.baseline().unwrap();
    assert_eq!((b.line, b.kind, b.quant.as_str()), (2, Kind::Baseline, "f32"));
    assert_eq!(b.bench("pi4-4gb").unwrap().status, Some(microscale::record::results::Status::Oom));
    assert!(!b.bench("pi4-4gb").unwrap().fits());
    assert_eq!(b.tg_tps("pi4-4gb"), None);
    assert_eq!(b.tg_tps("pi5-8gb"), Some(9.81));
    let failed: Vec<_> = r.failed().map(|v| v.name.as_str()).collect();
    assert_eq!(failed, ["magnitude-0.5-q4_k_m"]);
    assert_eq!(r.variants.iter().filter(|v| v.kind == Kind::Stock).count(), 2);
    let w = r.variants.iter().find(|v| v.name == "wanda-0.2-q4_k_m").unwrap();
    assert_eq!((w.method.as_str(), w.prune_ratio), ("wanda", Some(0.2)));
    assert_eq!(w.acc["sst2_acc"].stderr, Some(0.0117));
    // Plots never include the failed row.
    for (_, s) in scatters(&r, &Criteria::default()) {
        assert!(s.points.iter().all(|p| p.name != "magnitude-0.5-q4_k_m"));
    }
}

fn err_of(text: &str) -> String {
    format!("{:#}", parse_results(text, Path::new("dir/results.csv")).unwrap_err())
}

#[test]
fn malformed_csv_errors_name_file_and_line() {
    let good = std::fs::read_to_string(FIXTURE).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let with = |i: usize, new: &str| {
        let mut l = lines.clone();
        l[i] = new;
        l.join("\n") + "\n"
    };
    // Wrong column count on line 4.
    let short = lines[3].rsplit_once(',').unwrap().0.to_string();
    let e = err_of(&with(3, &short));
    assert!(e.contains("dir/results.csv:4:") && e.contains("fields, but the header has"), "{e}");
    // Non-numeric perplexity on line 3.
    let bad = lines[2].replace(",20.431,", ",twenty,");
    let e = err_of(&with(2, &bad));
    assert!(e.contains("dir/results.csv:3:") && e.contains("`ppl`") && e.contains("`twenty` is not a number"), "{e}");
    // A profile's status must be one of fits, oom, crash, error, timeout.
    let bad = lines[2].replacen(",fits,171.4,", ",yes,171.4,", 1);
    let e = err_of(&with(2, &bad));
    assert!(e.contains("dir/results.csv:3:") && e.contains("pi4-4gb:status") && e.contains("`yes`"), "{e}");
    // So must a variant's.
    let bad = lines[2].replacen(",ok,,", ",fine,,", 1);
    let e = err_of(&with(2, &bad));
    assert!(e.contains("dir/results.csv:3:") && e.contains("column `status`") && e.contains("`fine`"), "{e}");
    // Unknown kind.
    let bad = lines[3].replacen(",microscale,", ",mystery,", 1);
    let e = err_of(&with(3, &bad));
    assert!(e.contains("dir/results.csv:4:") && e.contains("`mystery`"), "{e}");
    // Size must be an integer.
    let bad = lines[3].replacen(",105471232,", ",1.5e8,", 1);
    assert!(err_of(&with(3, &bad)).contains("dir/results.csv:4: column `file_size_bytes`"));
    // A second baseline.
    let dup = lines[1].replacen("smollm2-135m-f32,", "again,", 1);
    let e = err_of(&with(4, &dup));
    assert!(e.contains("dir/results.csv:5: a second baseline row (the first is on line 2)"), "{e}");
    // Line numbers count the line breaks inside quoted fields.
    let multi = lines[7].replacen("after magnitude pruning", "after\nmagnitude\npruning", 1);
    let text = with(7, &multi) + &lines[8].replacen(",20.", ",x20.", 1).replacen(",21.", ",x21.", 1) + "\n";
    let e = err_of(&text);
    assert!(e.contains("dir/results.csv:13:"), "{e}");
    // A missing column.
    let e = err_of(&good.replacen(",ppl,", ",perplexity,", 1));
    assert!(e.contains("dir/results.csv:1:") && e.contains("no `ppl` column"), "{e}");
    // Empty file, and a file that is not there.
    assert!(err_of("").contains("dir/results.csv: empty file"));
    let e = format!("{:#}", read_results(Path::new("/nonexistent/results.csv")).unwrap_err());
    assert!(e.contains("/nonexistent/results.csv"), "{e}");
}

#[test]
fn pareto_by_hand() {
    // (size, ppl): the third point is dominated by the first; the last two are duplicates.
    let p = [(100.0, 20.0), (50.0, 25.0), (120.0, 21.0), (30.0, 30.0), (30.0, 30.0)];
    assert_eq!(pareto_min_min(&p), [3, 4, 1, 0]);
    // (size, accuracy).
    let a = [(100.0, 0.6), (50.0, 0.5), (120.0, 0.7), (60.0, 0.4)];
    assert_eq!(pareto_min_max(&a), [1, 0, 2]);
    assert_eq!(pareto_min_min(&[(1.0, 1.0)]), [0]);
}

#[test]
fn minimal_results_render() {
    // One baseline row, no device profile, no accuracy columns: still a report and one plot.
    let dir = tempfile::tempdir().unwrap();
    let header =
        "variant,kind,recipe,method,prune_ratio,quant,file_size_bytes,n_params,bits_per_weight,ppl,ppl_stderr,\
                  kld,kld_stderr,same_top,status,error,eval_chunks,eval_limit,microscale,llama_cpp,date";
    let row = "base,baseline,f16,none,0,f16,1048576,1000,16,12.5,,,,,ok,,,,,,";
    std::fs::write(dir.path().join("results.csv"), format!("{header}\n{row}\n")).unwrap();
    let md = std::fs::read_to_string(write_report(dir.path(), &ReportOptions::default()).unwrap()).unwrap();
    assert!(md.contains("No device profile was benchmarked"), "{md}");
    assert!(md.contains("- perplexity: `base` (1.00 MiB, PPL 12.500)"), "{md}");
    check_png(&dir.path().join("plots/ppl_vs_size.png"));
}

/// Broken variants do not squeeze the useful ones: beyond 2× the baseline's perplexity (or 1 nat
/// of KL divergence) a point is drawn on the plot's top edge, labelled with its real value, and
/// the frontier and the report's lists still use the real values.
#[test]
fn broken_variants_are_drawn_off_scale_on_the_edge() {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (ppl, kld) = (col("ppl"), col("kld"));
    let broken: String = text
        .lines()
        .map(|l| {
            if !l.starts_with("wanda-0.2-q4_k_m,") {
                return format!("{l}\n");
            }
            let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
            f[ppl] = "123456.7".into();
            f[kld] = "7.5".into();
            format!("{}\n", f.join(","))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("results.csv"), &broken).unwrap();
    let r = read_results(&dir.path().join("results.csv")).unwrap();
    let plots = scatters(&r, &Criteria::default());
    let get = |f: &str| &plots.iter().find(|(n, _)| n == f).unwrap_or_else(|| panic!("no {f}")).1;
    let off = |s: &microscale::report::plots::Scatter| -> Vec<String> {
        (0..s.points.len()).filter(|&i| s.off_scale(i)).map(|i| s.points[i].name.clone()).collect()
    };
    let (p, k) = (get("ppl_vs_size.png"), get("kld_vs_size.png"));
    assert_eq!(p.y_cap.as_ref().unwrap().0, 2.0 * 20.412, "twice the baseline's perplexity");
    assert_eq!(off(p), ["wanda-0.2-q4_k_m"]);
    assert_eq!(off(k), ["wanda-0.2-q4_k_m"]);
    // The KLD plot has every variant with a KL divergence, not the baseline (it has none).
    let with_kld = r.ok().filter(|v| v.kld.is_some_and(|m| m.value > 0.0)).count();
    assert_eq!(k.points.len(), with_kld);
    assert!(k.points.iter().all(|q| q.kind != Kind::Baseline));
    // The report renders, and its frontier list keeps the real value.
    write_report(dir.path(), &ReportOptions::default()).unwrap();
    for f in ["ppl_vs_size.png", "kld_vs_size.png"] {
        check_png(&dir.path().join("plots").join(f));
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let kld_line = md.lines().find(|l| l.starts_with("- KL divergence: ")).expect(&md);
    assert!(kld_line.contains("`q8_0`"), "{kld_line}");
}

#[test]
fn caveats_beside_results_are_listed_before_the_command_lines_ones() {
    let dir = fixture_dir();
    std::fs::write(
        dir.path().join("caveats.md"),
        "- The baseline is a dequantization,\n  read it so.\n- Speeds are lower bounds.\n\nA paragraph\nof two lines.\n",
    )
    .unwrap();
    let opts = ReportOptions { caveats: vec!["From the command line.".into()], ..Default::default() };
    let md = std::fs::read_to_string(write_report(dir.path(), &opts).unwrap()).unwrap();
    let section = &md[md.find("## Caveats").unwrap()..];
    let section = &section[..3 + section[3..].find("\n## ").unwrap()];
    let listed: Vec<&str> = section.lines().filter_map(|l| l.strip_prefix("- ")).collect();
    assert_eq!(
        listed[listed.len() - 4..],
        [
            "The baseline is a dequantization, read it so.",
            "Speeds are lower bounds.",
            "A paragraph of two lines.",
            "From the command line."
        ],
        "{section}"
    );

    // An unreadable caveats file is an error naming it, not a silently shorter report.
    std::fs::remove_file(dir.path().join("caveats.md")).unwrap();
    std::fs::create_dir(dir.path().join("caveats.md")).unwrap();
    let err = format!("{:#}", write_report(dir.path(), &opts).unwrap_err());
    assert!(err.contains("caveats.md"), "{err}");
}

// Rows measured on a device (`bench --out`), folded in by `report --device-rows`. The flow with a real
// aarch64 build under qemu is tests/it/aarch64.rs; these run on any CPU.

use microscale::record::device_rows::{read_device_rows, write_device_rows, Device, DeviceRow, DeviceRows};
use microscale::record::Status;

fn device_row(variant: &str, size: u64, status: Status, tg: Option<f64>) -> DeviceRow {
    DeviceRow {
        line: 0,
        variant: variant.into(),
        sha256: "0123456789ab".into(),
        size_bytes: size,
        profile: "native".into(),
        threads: 4,
        mem_cap_mib: None,
        mem_enforcement: "none".into(),
        status,
        // Commas and quotes in a field survive the round trip (CSV quoting).
        reason: if status == Status::Fits { String::new() } else { "killed by the \"memory\" cap, at load".into() },
        pp_tps: tg.map(|t| 10.0 * t),
        pp_tps_sd: tg.map(|_| 0.5),
        tg_tps: tg,
        tg_tps_sd: tg.map(|_| 0.1),
        peak_rss_mib: Some(150.0),
        load_s: tg.map(|_| 0.4),
        ttft_s: tg.map(|_| 0.9),
        repacked: Some(variant.contains("q4_0")),
        repacked_mib: Some(if variant.contains("q4_0") { 60.0 } else { 0.0 }),
        microscale: "0.1.0".into(),
        llama_cpp: "llama-cpp-sys-2 0.1.161".into(),
        date: "2026-12-07T00:00:00Z".into(),
    }
}

fn pi5(rows: Vec<DeviceRow>) -> DeviceRows {
    DeviceRows {
        device: Device {
            name: "pi5-8gb".into(),
            cpu: "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)".into(),
            arch: "aarch64".into(),
            cpu_features: "NEON ARM_FMA FP16_VA DOTPROD".into(),
            cpus: 4,
            memory_mib: 8064.0,
        },
        rows,
    }
}

#[test]
fn device_rows_round_trip_and_bad_rows_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.csv");
    let written = pi5(vec![
        device_row("q8_0", 144890880, Status::Fits, Some(9.5)),
        device_row("stock-q4_0", 96235520, Status::Oom, None),
    ]);
    write_device_rows(&path, &written).unwrap();
    let read = read_device_rows(&path).unwrap();
    assert_eq!(read.device, written.device);
    assert_eq!(read.rows.len(), 2);
    assert_eq!((read.rows[0].line, read.rows[1].line), (2, 3));
    assert_eq!(read.rows[1].status, Status::Oom);
    assert_eq!((read.rows[0].tg_tps, read.rows[1].repacked), (Some(9.5), Some(true)));
    assert_eq!(read.rows[1].reason, "killed by the \"memory\" cap, at load");

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let err = |body: String| {
        std::fs::write(&path, body).unwrap();
        format!("{:#}", read_device_rows(&path).unwrap_err())
    };
    let e = err(format!("{}\n{}\n", lines[0], lines[1].replace(",fits,", ",maybe,")));
    assert!(e.contains("rows.csv:2") && e.contains("`status`"), "{e}");
    let e = err(format!("{}\n{}\n{}\n", lines[0], lines[1], lines[1]));
    assert!(e.contains("rows.csv:3") && e.contains("`q8_0` again"), "{e}");
    let e = err(format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2].replacen("pi5-8gb", "pi4-4gb", 1)));
    assert!(e.contains("rows.csv:3") && e.contains("one file per device"), "{e}");
    let e = err(format!("{}\n{}\n", lines[0], lines[1].replace(",9.50,", ",NaN,")));
    assert!(e.contains("rows.csv:2") && e.contains("`tg_tps`"), "{e}");
    let e = err(format!("{}\n", lines[0]));
    assert!(e.contains("no rows"), "{e}");
    let e = err("variant,kind\nq8_0,microscale\n".into());
    assert!(e.contains("rows.csv:1") && e.contains("not a device rows file"), "{e}");
}

/// A device measured as `pi5-8gb`: its rows become the profile `pi5-8gb (measured)`, the emulated
/// `pi5-8gb` stays beside it, and the device's sweet spot follows its own rows (here: the smaller
/// stock-q4_0 does not fit on the device, so the pick is another file).
#[test]
fn device_rows_fold_in_and_decide_that_devices_sweet_spot() {
    let dir = fixture_dir();
    let opts = ReportOptions { max_ppl_increase: 0.5, max_acc_drop: 0.5, ..Default::default() };
    let emulated = microscale::report::markdown::read_study(dir.path(), &[]).unwrap();
    let c = opts.criteria();
    let emulated_pick = microscale::report::sweet_spot::sweet_spot(&emulated, "pi5-8gb", &c).pick.unwrap();
    assert_eq!(emulated.variants[emulated_pick].name, "wanda-0.2-q4_k_m");

    let rows = dir.path().join("pi5.csv");
    write_device_rows(
        &rows,
        &pi5(vec![
            device_row("q8_0", 144890880, Status::Fits, Some(9.5)),
            device_row("q4_k_m", 105471232, Status::Fits, Some(11.0)),
            device_row("wanda-0.2-q4_k_m", 89128960, Status::Oom, None),
        ]),
    )
    .unwrap();
    let opts = ReportOptions { device_rows: vec![rows.clone()], ..opts };
    let folded = microscale::report::markdown::read_study(dir.path(), &opts.device_rows).unwrap();
    assert_eq!(folded.profiles.last().map(String::as_str), Some("pi5-8gb (measured)"));
    let pick = microscale::report::sweet_spot::sweet_spot(&folded, "pi5-8gb (measured)", &c).pick.unwrap();
    assert_eq!(folded.variants[pick].name, "q4_k_m", "the smallest within budget that fits on the device");

    write_report(dir.path(), &opts).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("- **pi5-8gb (measured) — measured on device: Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0), aarch64**: `q4_k_m`"), "{md}");
    assert!(
        md.contains("- **pi5-8gb (emulated on this host; measured on the device below)**: `wanda-0.2-q4_k_m`"),
        "{md}"
    );
    assert!(md.contains("llama.cpp's CPU features there: NEON ARM_FMA FP16_VA DOTPROD"), "{md}");
    assert!(md.contains("| `wanda-0.2-q4_k_m` | microscale | 85.00 | oom (does not fit) |"), "{md}");
    assert!(dir.path().join("device-rows/pi5-8gb.csv").is_file(), "kept in the study");

    // A row of a file the study does not have is refused.
    let stranger = dir.path().join("stranger.csv");
    write_device_rows(&stranger, &pi5(vec![device_row("q9_9", 1, Status::Fits, Some(1.0))])).unwrap();
    let e = format!("{:#}", microscale::report::markdown::read_study(dir.path(), &[stranger]).unwrap_err());
    assert!(e.contains("stranger.csv:2") && e.contains("`q9_9` is not in"), "{e}");
}
