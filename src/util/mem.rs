//! Memory and file sizes: how much memory this machine has free, and sizes as users write them.

/// `MemAvailable` from /proc/meminfo, in bytes (None where there is no such file).
pub fn available_bytes() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable")
}

/// `MemTotal` from /proc/meminfo, in bytes: the machine's own memory.
pub fn total_memory() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal")
}

/// The peak resident set (VmHWM) of a process (`None`: this one), in bytes; None where /proc
/// has no such process.
pub fn peak_rss_of(pid: Option<i32>) -> Option<u64> {
    let path = pid.map_or_else(|| "/proc/self/status".to_string(), |p| format!("/proc/{p}/status"));
    kib_field(&std::fs::read_to_string(path).ok()?, "VmHWM")
}

/// This process's peak resident set (VmHWM), in bytes (0 where /proc cannot tell).
pub fn peak_rss() -> u64 {
    peak_rss_of(None).unwrap_or(0)
}

/// A `Key:   1234 kB` line of a /proc file, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A size as users write it: `3GiB`, `512MiB`, `1.5GB`, `700M`, `123456` (bytes). Binary and
/// decimal units are both accepted (memory caps, `--target-size`).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = match num.parse() {
        Ok(n) if n > 0.0 => n,
        _ => anyhow::bail!("bad size {s:?}: expected a positive size such as 512MiB or 1.5GB"),
    };
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        other => anyhow::bail!("bad size {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"),
    };
    Ok((n * mult).round() as u64)
}

/// `3.0 GiB`, `512 MiB`: a memory cap, a device's memory, a peak resident set, as the bench
/// tables and the failure reasons recorded in results.csv print them (caps are round numbers; a
/// file's size, where two decimals tell variants apart, is [`format_size`]).
pub fn format_size_short(b: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    if b as f64 >= GIB {
        format!("{:.1} GiB", b as f64 / GIB)
    } else {
        format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
    }
}

/// `1.23 GiB`, `93.51 MiB`, `12.0 KiB`.
pub fn format_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("100MiB").unwrap(), 100 << 20);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("-3MB").is_err());
        assert!(parse_size("0GiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
