//! The device a benchmark runs on, as rows measured on it name it ([`crate::record::device_rows`]):
//! its CPU model and architecture, the CPU features llama.cpp's kernels were compiled with there, and
//! whether llama.cpp repacked a model's weights at load.
//!
//! Repacking: llama.cpp's CPU backend copies some weight types into interleaved layouts when it loads
//! a model (its `CPU_REPACK` buffer type), by CPU: with AVX2, Q4_0, Q4_K, IQ4_NL and MXFP4 (Q2_K with
//! AVX-512); with ARM's dotprod or i8mm, also Q5_K, Q6_K and Q8_0. That makes those types faster there
//! than their size says.
//! Which rows were repacked depends on the CPU, so it is read from each run's own load log.

use super::run::BenchRow;
use crate::record::device_rows::{Device, DeviceRow};
use std::path::Path;

/// This machine, named `name` (default: its host name).
pub fn this_device(name: Option<&str>) -> Device {
    let info = crate::engine::info::engine_info();
    Device {
        name: name.map(str::to_string).unwrap_or_else(host_name),
        cpu: cpu_model(),
        arch: std::env::consts::ARCH.to_string(),
        cpu_features: info.cpu_features.join(" "),
        cpus: crate::sandbox::caps::available_cpus().len(),
        memory_mib: crate::util::mem::total_memory().map_or(0.0, |b| b as f64 / (1u64 << 20) as f64),
    }
}

/// The host name as a plain name (what `--device` defaults to).
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let plain: String =
        raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '-' }).collect();
    let plain = plain.trim_start_matches(['.', '-']).chars().take(200).collect::<String>();
    if plain.is_empty() {
        "device".into()
    } else {
        plain
    }
}

/// The CPU's model: x86's `model name`; on ARM, the core named from its part number (aarch64
/// /proc/cpuinfo has no model name) with the board's model from the device tree (a Raspberry Pi's
/// or a Jetson's) when there is one.
pub fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let board = std::fs::read_to_string("/sys/firmware/devicetree/base/model")
        .ok()
        .map(|s| s.trim_end_matches('\0').trim().to_string())
        .filter(|s| !s.is_empty());
    cpu_model_from(&cpuinfo, board.as_deref())
}

fn field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim()).filter(|v| !v.is_empty())
    })
}

pub fn cpu_model_from(cpuinfo: &str, board: Option<&str>) -> String {
    if let Some(m) = field(cpuinfo, "model name") {
        return m.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    let core = match (field(cpuinfo, "CPU implementer"), field(cpuinfo, "CPU part")) {
        (Some(imp), Some(part)) => Some(arm_core(imp, part)),
        _ => None,
    };
    match (core, board) {
        (Some(c), Some(b)) => format!("{c} ({b})"),
        (Some(c), None) => c,
        (None, Some(b)) => b.to_string(),
        (None, None) => format!("unknown {} CPU", std::env::consts::ARCH),
    }
}

/// ARM cores of the devices microscale is for, by implementer and part number (Linux's
/// arch/arm64/include/asm/cputype.h); others by their numbers.
fn arm_core(implementer: &str, part: &str) -> String {
    let known = match (implementer.to_ascii_lowercase().as_str(), part.to_ascii_lowercase().as_str()) {
        ("0x41", "0xd03") => Some("Cortex-A53"),
        ("0x41", "0xd04") => Some("Cortex-A35"),
        ("0x41", "0xd05") => Some("Cortex-A55"),
        ("0x41", "0xd07") => Some("Cortex-A57"),
        ("0x41", "0xd08") => Some("Cortex-A72"),
        ("0x41", "0xd09") => Some("Cortex-A73"),
        ("0x41", "0xd0a") => Some("Cortex-A75"),
        ("0x41", "0xd0b") => Some("Cortex-A76"),
        ("0x41", "0xd0d") => Some("Cortex-A77"),
        ("0x41", "0xd41") => Some("Cortex-A78"),
        ("0x41", "0xd42") => Some("Cortex-A78AE"),
        ("0x41", "0xd44") => Some("Cortex-X1"),
        ("0x41", "0xd46") => Some("Cortex-A510"),
        ("0x41", "0xd47") => Some("Cortex-A710"),
        ("0x41", "0xd4d") => Some("Cortex-A715"),
        ("0x41", "0xd0c") => Some("Neoverse-N1"),
        ("0x41", "0xd40") => Some("Neoverse-V1"),
        ("0x41", "0xd49") => Some("Neoverse-N2"),
        ("0x41", "0xd4f") => Some("Neoverse-V2"),
        ("0x61", _) => Some("Apple"),
        _ => None,
    };
    known.map_or_else(|| format!("ARM implementer {implementer} part {part}"), str::to_string)
}

/// From a measuring child's standard error (llama.cpp's load log, one line per buffer: `load_tensors:
/// CPU_REPACK model buffer size = 12.34 MiB`): the MiB llama.cpp repacked, 0 when it loaded the model
/// without repacking, None when the log never got as far as the model's buffers.
pub fn repacked_mib(child_stderr: &str) -> Option<f64> {
    let mut loaded = false;
    let mut repacked = 0.0;
    for line in child_stderr.lines() {
        let Some((before, after)) = line.split_once("model buffer size") else { continue };
        loaded = true;
        if before.split_whitespace().last() == Some("CPU_REPACK") {
            let mib =
                after.trim_start_matches([' ', '=']).split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
            repacked += mib.unwrap_or(0.0);
        }
    }
    loaded.then_some(repacked)
}

/// A bench row as a device row: the variant is the file's stem.
pub fn device_row(r: &BenchRow, sha256: &str) -> DeviceRow {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let fits = r.status == crate::record::Status::Fits;
    DeviceRow {
        line: 0,
        variant: Path::new(&r.model).file_stem().map_or_else(|| r.model.clone(), |s| s.to_string_lossy().into_owned()),
        sha256: sha256.to_string(),
        size_bytes: r.size_bytes,
        profile: r.profile.clone(),
        threads: r.threads,
        mem_cap_mib: r.memory_cap.map(mib),
        mem_enforcement: r.enforcement.memory.clone(),
        status: r.status,
        reason: r.reason.clone().unwrap_or_default(),
        pp_tps: r.pp.map(|m| m.mean),
        pp_tps_sd: r.pp.map(|m| m.sd),
        tg_tps: r.tg.map(|m| m.mean),
        tg_tps_sd: r.tg.map(|m| m.sd),
        peak_rss_mib: (r.peak_rss > 0).then(|| mib(r.peak_rss)),
        load_s: r.load_s.filter(|_| fits),
        ttft_s: r.ttft_s.filter(|_| fits),
        repacked: r.repacked_mib.map(|m| m > 0.0),
        repacked_mib: r.repacked_mib,
        microscale: env!("CARGO_PKG_VERSION").to_string(),
        llama_cpp: crate::engine::llama_cpp_version(),
        date: crate::record::rows::utc_now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repacking_is_read_from_the_load_log() {
        let log = "llama.cpp: load_tensors: loading model tensors, this can take a while... (mmap = false)\n\
                   llama.cpp: load_tensors:          CPU model buffer size =    28.12 MiB\n\
                   llama.cpp: load_tensors:   CPU_REPACK model buffer size =    40.50 MiB\n";
        assert_eq!(repacked_mib(log), Some(40.5));
        assert_eq!(repacked_mib("llama.cpp: load_tensors:          CPU model buffer size =    28.12 MiB\n"), Some(0.0));
        assert_eq!(repacked_mib("llama.cpp: llama_model_load: error loading model\n"), None);
    }

    #[test]
    fn cpu_models() {
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC   7B13 64-Core Processor\nflags\t: fpu\n";
        assert_eq!(cpu_model_from(x86, None), "AMD EPYC 7B13 64-Core Processor");
        let pi4 = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n";
        assert_eq!(
            cpu_model_from(pi4, Some("Raspberry Pi 4 Model B Rev 1.4")),
            "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"
        );
        let other = "CPU implementer\t: 0x51\nCPU part\t: 0x805\n";
        assert_eq!(cpu_model_from(other, None), "ARM implementer 0x51 part 0x805");
    }
}
