//! Rows measured on the device itself: `microscale bench DIR --profile native --out rows.csv`, run on a
//! Raspberry Pi, a Jetson or a phone, writes one row per model file with the device's identity (its
//! name, CPU model, architecture and the CPU features llama.cpp was built with there);
//! `microscale report DIR --device-rows rows.csv` on the workstation folds them into the study.
//!
//! One file holds one device. Every row names its variant (the file's stem, as the sweep names it), its
//! size and sha256 prefix, so that the report refuses rows of files that are not the sweep's.

use super::results::parse_csv;
use super::status::Status;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What the rows were measured on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Device {
    /// The name the user gave (`bench --device`), or the host's name.
    pub name: String,
    /// CPU model, e.g. "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)".
    pub cpu: String,
    /// `aarch64`, `x86_64`, ...
    pub arch: String,
    /// CPU features compiled into llama.cpp's kernels on that device (`ggml_cpu_has_*`), space-separated.
    pub cpu_features: String,
    /// Logical CPUs of the device.
    pub cpus: usize,
    /// The device's memory (MemTotal), MiB.
    pub memory_mib: f64,
}

/// One model benchmarked on the device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRow {
    /// 1-based line in the file.
    pub line: usize,
    pub variant: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub profile: String,
    pub threads: usize,
    /// The memory cap the run had (the device's own memory when none could be enforced), MiB.
    pub mem_cap_mib: Option<f64>,
    /// How the cap was enforced, or why it could not be.
    pub mem_enforcement: String,
    pub status: Status,
    pub reason: String,
    pub pp_tps: Option<f64>,
    pub pp_tps_sd: Option<f64>,
    pub tg_tps: Option<f64>,
    pub tg_tps_sd: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub load_s: Option<f64>,
    pub ttft_s: Option<f64>,
    /// llama.cpp repacked some weights into its interleaved CPU layouts at load (`CPU_REPACK`
    /// buffer); None: the model was never loaded.
    pub repacked: Option<bool>,
    pub repacked_mib: Option<f64>,
    pub microscale: String,
    pub llama_cpp: String,
    pub date: String,
}

/// A device rows file: the device and its rows.
#[derive(Clone, Debug)]
pub struct DeviceRows {
    pub device: Device,
    pub rows: Vec<DeviceRow>,
}

pub const HEADER: &[&str] = &[
    "device",
    "cpu",
    "arch",
    "cpu_features",
    "cpus",
    "memory_mib",
    "variant",
    "sha256",
    "size_bytes",
    "profile",
    "threads",
    "mem_cap_mib",
    "mem_enforcement",
    "status",
    "reason",
    "pp_tps",
    "pp_tps_sd",
    "tg_tps",
    "tg_tps_sd",
    "peak_rss_mib",
    "load_s",
    "ttft_s",
    "repacked",
    "repacked_mib",
    "microscale",
    "llama_cpp",
    "date",
];

fn num(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}")).unwrap_or_default()
}

fn record(d: &Device, r: &DeviceRow) -> Vec<String> {
    vec![
        d.name.clone(),
        d.cpu.clone(),
        d.arch.clone(),
        d.cpu_features.clone(),
        d.cpus.to_string(),
        format!("{:.0}", d.memory_mib),
        r.variant.clone(),
        r.sha256.clone(),
        r.size_bytes.to_string(),
        r.profile.clone(),
        r.threads.to_string(),
        num(r.mem_cap_mib, 0),
        r.mem_enforcement.clone(),
        r.status.as_str().to_string(),
        r.reason.clone(),
        num(r.pp_tps, 2),
        num(r.pp_tps_sd, 2),
        num(r.tg_tps, 2),
        num(r.tg_tps_sd, 2),
        num(r.peak_rss_mib, 1),
        num(r.load_s, 3),
        num(r.ttft_s, 3),
        r.repacked.map(|b| if b { "yes" } else { "no" }.to_string()).unwrap_or_default(),
        num(r.repacked_mib, 2),
        r.microscale.clone(),
        r.llama_cpp.clone(),
        r.date.clone(),
    ]
}

/// Write the whole file (a temporary file renamed into place: a reader never sees half of it).
pub fn write_device_rows(path: &Path, rows: &DeviceRows) -> Result<()> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(HEADER)?;
    for r in &rows.rows {
        w.write_record(record(&rows.device, r))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error()))?;
    crate::util::atomic::write_file(path, &bytes)
}

/// Read and check a device rows file: its header, one device throughout, every field's syntax.
pub fn read_device_rows(path: &Path) -> Result<DeviceRows> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let records = parse_csv(text, path)?;
    let Some(((_, header), rest)) = records.split_first() else {
        bail!("{}: empty file (expected the header of `microscale bench --out` rows)", path.display());
    };
    if header.iter().map(|h| h.trim()).ne(HEADER.iter().copied()) {
        bail!(
            "{}:1: not a device rows file (`microscale bench --out`): the header is not `{}`",
            path.display(),
            HEADER.join(",")
        );
    }
    if rest.is_empty() {
        bail!("{}: no rows (the bench on the device measured nothing)", path.display());
    }
    let mut device: Option<Device> = None;
    let mut rows = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (line, rec) in rest {
        if rec.len() != HEADER.len() {
            bail!("{}:{line}: {} fields, but the header has {} columns", path.display(), rec.len(), HEADER.len());
        }
        let f = Fields { path, line: *line, rec };
        let d = f.device()?;
        match &device {
            None => device = Some(d),
            Some(first) if *first != d => bail!(
                "{}:{line}: device `{}` ({}), but the file's first row is device `{}` ({}): one file per device",
                path.display(),
                d.name,
                d.cpu,
                first.name,
                first.cpu
            ),
            Some(_) => {}
        }
        let row = f.row()?;
        if let Some(first) = seen.insert(row.variant.clone(), *line) {
            bail!("{}:{line}: variant `{}` again (first on line {first})", path.display(), row.variant);
        }
        rows.push(row);
    }
    Ok(DeviceRows { device: device.expect("at least one row"), rows })
}

struct Fields<'a> {
    path: &'a Path,
    line: usize,
    rec: &'a [String],
}

impl Fields<'_> {
    fn text(&self, name: &str) -> &str {
        let i = HEADER.iter().position(|h| *h == name).expect("a known column");
        self.rec[i].trim()
    }

    fn fail(&self, name: &str, what: &str) -> anyhow::Error {
        anyhow::anyhow!("{}:{}: column `{name}`: `{}` is not {what}", self.path.display(), self.line, self.text(name))
    }

    fn required(&self, name: &str) -> Result<String> {
        match self.text(name) {
            "" => bail!("{}:{}: column `{name}` is empty", self.path.display(), self.line),
            s => Ok(s.to_string()),
        }
    }

    fn num(&self, name: &str) -> Result<Option<f64>> {
        match self.text(name) {
            "" => Ok(None),
            s => match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
                _ => Err(self.fail(name, "a finite non-negative number")),
            },
        }
    }

    fn int(&self, name: &str) -> Result<u64> {
        self.text(name).parse::<u64>().map_err(|_| self.fail(name, "a non-negative integer"))
    }

    fn device(&self) -> Result<Device> {
        let name = self.required("device")?;
        crate::util::names::check_plain_name(&name)
            .map_err(|e| anyhow::anyhow!("{}:{}: column `device`: {e}", self.path.display(), self.line))?;
        Ok(Device {
            name,
            cpu: self.required("cpu")?,
            arch: self.required("arch")?,
            cpu_features: self.text("cpu_features").to_string(),
            cpus: self.int("cpus")? as usize,
            memory_mib: self.num("memory_mib")?.ok_or_else(|| self.fail("memory_mib", "a number"))?,
        })
    }

    fn row(&self) -> Result<DeviceRow> {
        let status = Status::parse(self.text("status"))
            .ok_or_else(|| self.fail("status", "one of fits, oom, crash, error, timeout"))?;
        let repacked = match self.text("repacked") {
            "yes" => Some(true),
            "no" => Some(false),
            "" => None,
            _ => return Err(self.fail("repacked", "yes, no or empty")),
        };
        let sha256 = self.text("sha256").to_string();
        if !(sha256.len() == 12 && sha256.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(self.fail("sha256", "12 hex digits"));
        }
        let row = DeviceRow {
            line: self.line,
            variant: self.required("variant")?,
            sha256,
            size_bytes: self.int("size_bytes")?,
            profile: self.required("profile")?,
            threads: self.int("threads")? as usize,
            mem_cap_mib: self.num("mem_cap_mib")?,
            mem_enforcement: self.text("mem_enforcement").to_string(),
            status,
            reason: self.text("reason").to_string(),
            pp_tps: self.num("pp_tps")?,
            pp_tps_sd: self.num("pp_tps_sd")?,
            tg_tps: self.num("tg_tps")?,
            tg_tps_sd: self.num("tg_tps_sd")?,
            peak_rss_mib: self.num("peak_rss_mib")?,
            load_s: self.num("load_s")?,
            ttft_s: self.num("ttft_s")?,
            repacked,
            repacked_mib: self.num("repacked_mib")?,
            microscale: self.text("microscale").to_string(),
            llama_cpp: self.text("llama_cpp").to_string(),
            date: self.text("date").to_string(),
        };
        if row.status == Status::Fits && row.tg_tps.is_none() && row.pp_tps.is_none() {
            bail!("{}:{}: status `fits` but neither pp_tps nor tg_tps", self.path.display(), self.line);
        }
        Ok(row)
    }
}
