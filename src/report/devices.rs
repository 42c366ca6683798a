//! Rows measured on the devices themselves (`microscale bench DIR --profile native --out rows.csv`, run
//! on a Pi, a Jetson or a phone), folded into a study: each device becomes a profile of its own,
//! `NAME (measured)`, beside the profiles emulated on the workstation, so that the sweet spot, the
//! tables and the plots cover it like any other, and a device named after an emulated profile
//! (`--device pi4-4gb`) shows its measured speeds next to that profile's.
//!
//! The rows are kept in the study's folder (`device-rows/NAME.csv`, copied there by `report
//! --device-rows`), so that the report is regenerated from the folder alone. Rows are checked against
//! results.csv before anything is written: every variant must be one of the study's, of the same
//! size, and, where the study's file is at hand (`variants/NAME.gguf`), of the same sha256.

use crate::record::device_rows::{read_device_rows, DeviceRows};
use crate::record::results::{Bench, Results};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a study keeps the device rows folded into it.
pub const DEVICE_ROWS_DIR: &str = "device-rows";

/// The profile name under which a device's measured rows appear.
pub fn measured_key(device: &str) -> String {
    format!("{device} (measured)")
}

/// The study's stored rows (`DIR/device-rows/*.csv`), then `given` (each replacing a stored file of
/// the same device), checked against `results`. Returns each device's rows and the file it came from.
pub fn load_device_rows(dir: &Path, results: &Results, given: &[PathBuf]) -> Result<Vec<(PathBuf, DeviceRows)>> {
    let mut stored: BTreeMap<String, (PathBuf, DeviceRows)> = BTreeMap::new();
    for path in stored_files(dir)? {
        let rows = read_device_rows(&path)?;
        let name = rows.device.name.clone();
        if let Some((first, _)) = stored.get(&name) {
            bail!("{}: device `{name}` again (also in {}): one rows file per device", path.display(), first.display());
        }
        stored.insert(name, (path, rows));
    }
    let mut fresh: BTreeMap<String, (PathBuf, DeviceRows)> = BTreeMap::new();
    for path in given {
        let rows = read_device_rows(path)?;
        let name = rows.device.name.clone();
        if let Some((first, _)) = fresh.get(&name) {
            bail!("{}: device `{name}` again (also in {}): one rows file per device", path.display(), first.display());
        }
        // Files are hashed once, when their rows come in; stored rows were checked then.
        check_against_study(dir, results, path, &rows, true)?;
        fresh.insert(name, (path.clone(), rows));
    }
    for (path, rows) in stored.values() {
        check_against_study(dir, results, path, rows, false)?;
    }
    stored.extend(fresh);
    Ok(stored.into_values().collect())
}

fn stored_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let stored = dir.join(DEVICE_ROWS_DIR);
    if !stored.is_dir() {
        return Ok(vec![]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&stored)
        .with_context(|| format!("{}: cannot read", stored.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every row is one of the study's files: known variant, same size, and (when `hash`) the same sha256
/// where the file is here.
fn check_against_study(dir: &Path, results: &Results, path: &Path, rows: &DeviceRows, hash: bool) -> Result<()> {
    let name = &rows.device.name;
    if results.profiles.iter().any(|p| *p == measured_key(name)) {
        bail!("{}: device `{name}`: results.csv already has a profile `{}`", path.display(), measured_key(name));
    }
    for r in &rows.rows {
        let Some(v) = results.variants.iter().find(|v| v.name == r.variant) else {
            bail!(
                "{}:{}: variant `{}` is not in {} (rows of another study's files?)",
                path.display(),
                r.line,
                r.variant,
                results.path.display()
            );
        };
        if let Some(size) = v.size_bytes.filter(|&s| s != r.size_bytes) {
            bail!(
                "{}:{}: `{}` is {} bytes on device `{name}` but {size} bytes in {}: not the same file",
                path.display(),
                r.line,
                r.variant,
                r.size_bytes,
                results.path.display()
            );
        }
        let here = dir.join("variants").join(format!("{}.gguf", r.variant));
        if hash && here.is_file() {
            let sha = crate::record::rows::sha256_prefix(&here)?;
            if sha != r.sha256 {
                bail!(
                    "{}:{}: `{}` has sha256 {}… on device `{name}` but {sha}… here ({}): not the same file",
                    path.display(),
                    r.line,
                    r.variant,
                    r.sha256,
                    here.display()
                );
            }
        }
    }
    Ok(())
}

/// Copy the given rows files into the study (`DIR/device-rows/NAME.csv`), each written whole.
pub fn store_device_rows(dir: &Path, loaded: &[(PathBuf, DeviceRows)]) -> Result<()> {
    let stored = dir.join(DEVICE_ROWS_DIR);
    for (path, rows) in loaded {
        let target = stored.join(format!("{}.csv", rows.device.name));
        if path.parent() == Some(stored.as_path()) && *path == target {
            continue;
        }
        std::fs::create_dir_all(&stored).with_context(|| format!("cannot create {}", stored.display()))?;
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        crate::util::atomic::write_file(&target, &bytes)?;
    }
    Ok(())
}

/// Each device's rows as a profile of `results`, `NAME (measured)`, after the emulated ones.
pub fn fold_into(results: &mut Results, loaded: &[(PathBuf, DeviceRows)]) {
    for (_, rows) in loaded {
        let key = measured_key(&rows.device.name);
        for r in &rows.rows {
            let Some(v) = results.variants.iter_mut().find(|v| v.name == r.variant) else { continue };
            v.bench.insert(
                key.clone(),
                Bench {
                    status: Some(r.status),
                    peak_rss_mib: r.peak_rss_mib,
                    pp_tps: r.pp_tps,
                    pp_tps_sd: r.pp_tps_sd,
                    tg_tps: r.tg_tps,
                    tg_tps_sd: r.tg_tps_sd,
                    load_s: r.load_s,
                    ttft_s: r.ttft_s,
                    mem_cap_mib: r.mem_cap_mib,
                    repacked: r.repacked,
                },
            );
        }
        results.profiles.push(key.clone());
        results.measured.insert(key, rows.clone());
    }
}
