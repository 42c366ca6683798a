//! `speeds.json`: how a study's speed columns were taken when `sweep --rebench` re-measured them
//! in one interleaved pass (every file in turn, round after round, per profile), with every
//! round's numbers, so that the report can state their spread instead of ranking by chance.
//!
//! A study without the file had each variant benchmarked once, when its row was measured.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file beside results.csv.
pub const SPEEDS_FILE: &str = "speeds.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SpeedPass {
    /// When the pass started and ended (UTC).
    pub started: String,
    pub ended: String,
    /// The CPU that ran it (`bench::device::cpu_model`).
    pub host: String,
    pub microscale: String,
    /// How many times each file was benchmarked per profile, once per round.
    pub rounds: usize,
    /// What one benchmark run was: prompt and generated tokens, repetitions within the run.
    pub n_prompt: usize,
    pub n_gen: usize,
    pub reps: usize,
    /// The files in the order every round ran them.
    pub files: Vec<PassFile>,
    pub profiles: Vec<ProfilePass>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PassFile {
    pub variant: String,
    /// The first 12 hex digits of the SHA-256 of its tensors alone (names, types, shapes, data): equal for files whose weights
    /// are byte-identical, whatever their metadata (the importance matrix's path, the tool).
    pub weights_sha256: String,
    pub size_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProfilePass {
    pub profile: String,
    /// `rounds[r][f]`: round r's run of file f (the order of [`SpeedPass::files`]).
    pub rounds: Vec<Vec<RoundRun>>,
}

/// One benchmark run of one file: its status and, when it fit, its mean t/s over the run's reps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoundRun {
    pub status: String,
    pub pp_tps: Option<f64>,
    pub tg_tps: Option<f64>,
}

impl SpeedPass {
    /// The pass recorded in `dir`, if any.
    pub fn read(dir: &Path) -> Result<Option<SpeedPass>> {
        let path = dir.join(SPEEDS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
        };
        let pass: SpeedPass = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a speed pass written by `sweep --rebench`", path.display()))?;
        pass.check(&path)?;
        Ok(Some(pass))
    }

    /// Every profile has `rounds` rounds of one run per file.
    fn check(&self, path: &Path) -> Result<()> {
        for p in &self.profiles {
            let ok = p.rounds.len() == self.rounds && p.rounds.iter().all(|r| r.len() == self.files.len());
            anyhow::ensure!(
                ok,
                "{}: profile {} does not hold {} rounds of {} runs",
                path.display(),
                p.profile,
                self.rounds,
                self.files.len()
            );
        }
        Ok(())
    }

    /// File `f`'s generation speeds on `profile`, one per round that fit.
    pub fn tg_runs(&self, profile: &str, f: usize) -> Vec<f64> {
        self.profile(profile).map(|p| p.rounds.iter().filter_map(|r| r[f].tg_tps).collect()).unwrap_or_default()
    }

    pub fn profile(&self, name: &str) -> Option<&ProfilePass> {
        self.profiles.iter().find(|p| p.profile == name)
    }

    /// Round-to-round spread of generation speed: for each profile and file with at least two
    /// fitting rounds, the sample sd over the mean (coefficient of variation).
    pub fn tg_variation(&self) -> Vec<(String, String, f64)> {
        let mut out = vec![];
        for p in &self.profiles {
            for (f, file) in self.files.iter().enumerate() {
                let runs = self.tg_runs(&p.profile, f);
                if runs.len() < 2 {
                    continue;
                }
                let m = crate::util::stats::mean(&runs);
                let sd = crate::util::stats::sample_sd(&runs);
                if m > 0.0 {
                    out.push((p.profile.clone(), file.variant.clone(), sd / m));
                }
            }
        }
        out
    }

    /// Files with byte-identical weights (same [`PassFile::weights_sha256`]) under different names, grouped, in pass order.
    pub fn identical_groups(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = vec![];
        for (i, f) in self.files.iter().enumerate() {
            match groups.iter_mut().find(|g| self.files[g[0]].weights_sha256 == f.weights_sha256) {
                Some(g) => g.push(i),
                None => groups.push(vec![i]),
            }
        }
        groups.retain(|g| g.len() > 1);
        groups
    }

    /// The largest ratio of mean generation speeds between byte-identical files on one profile
    /// (1.0: they agree), with the profile and the two files; None without such files.
    pub fn identical_tg_ratio(&self) -> Option<(f64, String, String, String)> {
        let mut worst: Option<(f64, String, String, String)> = None;
        for g in self.identical_groups() {
            for p in &self.profiles {
                let means: Vec<(usize, f64)> = g
                    .iter()
                    .filter_map(|&f| {
                        let runs = self.tg_runs(&p.profile, f);
                        (!runs.is_empty()).then(|| (f, crate::util::stats::mean(&runs)))
                    })
                    .collect();
                let (Some(hi), Some(lo)) =
                    (means.iter().max_by(|a, b| a.1.total_cmp(&b.1)), means.iter().min_by(|a, b| a.1.total_cmp(&b.1)))
                else {
                    continue;
                };
                let ratio = hi.1 / lo.1;
                if worst.as_ref().is_none_or(|w| ratio > w.0) {
                    let name = |f: usize| self.files[f].variant.clone();
                    worst = Some((ratio, p.profile.clone(), name(hi.0), name(lo.0)));
                }
            }
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tg: f64) -> RoundRun {
        RoundRun { status: "fits".into(), pp_tps: Some(10.0 * tg), tg_tps: Some(tg) }
    }

    fn pass() -> SpeedPass {
        let file = |v: &str, sha: &str| PassFile { variant: v.into(), weights_sha256: sha.into(), size_bytes: 1 };
        SpeedPass {
            started: "a".into(),
            ended: "b".into(),
            host: "cpu".into(),
            microscale: "0".into(),
            rounds: 3,
            n_prompt: 64,
            n_gen: 16,
            reps: 2,
            files: vec![file("q8_0", "aa"), file("stock-q8_0", "aa"), file("q4_k_m", "bb")],
            profiles: vec![ProfilePass {
                profile: "host".into(),
                rounds: vec![
                    vec![run(100.0), run(110.0), run(50.0)],
                    vec![run(100.0), run(130.0), run(50.0)],
                    vec![run(100.0), run(120.0), run(50.0)],
                ],
            }],
        }
    }

    #[test]
    fn identical_files_are_grouped_and_their_speed_ratio_is_the_worst_profile_s() {
        let p = pass();
        assert_eq!(p.identical_groups(), vec![vec![0, 1]]);
        let (ratio, profile, hi, lo) = p.identical_tg_ratio().unwrap();
        assert!((ratio - 1.2).abs() < 1e-12, "{ratio}");
        assert_eq!((profile.as_str(), hi.as_str(), lo.as_str()), ("host", "stock-q8_0", "q8_0"));
    }

    #[test]
    fn variation_is_the_sample_sd_over_the_mean_of_the_rounds() {
        let v = pass().tg_variation();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].2, 0.0);
        assert!((v[1].2 - 10.0 / 120.0).abs() < 1e-12, "{}", v[1].2);
    }

    #[test]
    fn a_pass_whose_rounds_do_not_match_its_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pass();
        p.profiles[0].rounds[1].pop();
        std::fs::write(dir.path().join(SPEEDS_FILE), serde_json::to_string(&p).unwrap()).unwrap();
        let e = SpeedPass::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("speeds.json") && e.contains("3 rounds of 3 runs"), "{e}");
    }
}
