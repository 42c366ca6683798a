//! Device profiles: the thread count and memory a process gets on a Raspberry Pi, a Jetson or a
//! phone, shipped in `profiles.toml` (embedded in the binary) and listable with `--list-profiles`.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const PROFILES_TOML: &str = include_str!("profiles.toml");

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Profile {
    pub name: String,
    /// llama.cpp threads (0: all cores of the host).
    pub threads: usize,
    /// Bytes one process may use (None: no cap).
    pub memory: Option<u64>,
    /// CPU bandwidth in CPUs (None: no quota).
    pub cpu_quota: Option<f64>,
    pub note: String,
}

/// Flags that override a profile's fields (`--threads`, `--mem-limit`, `--cpu-quota`).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub threads: Option<usize>,
    /// `Some(None)`: no cap (`--mem-limit none`).
    pub memory: Option<Option<u64>>,
    pub cpu_quota: Option<f64>,
}

impl Profile {
    /// The profile with the given fields replaced.
    pub fn with(mut self, o: &Overrides) -> Profile {
        if let Some(t) = o.threads {
            self.threads = t;
        }
        if let Some(m) = o.memory {
            self.memory = m;
        }
        if o.cpu_quota.is_some() {
            self.cpu_quota = o.cpu_quota;
        }
        self
    }
}

/// A profile as written in TOML (the shipped file, or a grid's `[profiles.NAME]` table).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    threads: usize,
    memory: String,
    cpu_quota: Option<f64>,
    note: String,
}

impl RawProfile {
    pub fn into_profile(self, name: &str) -> Result<Profile> {
        let memory = parse_memory(&self.memory).with_context(|| format!("profile {name}"))?;
        if let Some(q) = self.cpu_quota {
            if !(0.01..=4096.0).contains(&q) {
                bail!("profile {name}: cpu_quota {q} is outside 0.01..=4096 CPUs");
            }
        }
        if self.threads > crate::engine::MAX_THREADS {
            bail!("profile {name}: {} threads; llama.cpp runs at most {}", self.threads, crate::engine::MAX_THREADS);
        }
        if self.note.trim().is_empty() {
            bail!("profile {name}: empty note");
        }
        Ok(Profile {
            name: name.to_string(),
            threads: self.threads,
            memory,
            cpu_quota: self.cpu_quota,
            note: self.note,
        })
    }
}

/// Every profile in the shipped file, by name.
pub fn profiles() -> Result<BTreeMap<String, Profile>> {
    parse_profiles(PROFILES_TOML)
}

pub fn parse_profiles(text: &str) -> Result<BTreeMap<String, Profile>> {
    let raw: BTreeMap<String, RawProfile> = toml::from_str(text).context("profiles file")?;
    raw.into_iter().map(|(name, r)| Ok((name.clone(), r.into_profile(&name)?))).collect()
}

pub fn profile(name: &str) -> Result<Profile> {
    let all = profiles()?;
    all.get(name).cloned().ok_or_else(|| {
        anyhow!("unknown profile {name:?} (known: {})", all.keys().cloned().collect::<Vec<_>>().join(", "))
    })
}

/// "3GiB", "512MiB", "2.5GB", "none".
pub fn parse_memory(s: &str) -> Result<Option<u64>> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    crate::util::mem::parse_size(s).map(Some).map_err(|e| anyhow!("memory size: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_are_complete() {
        let all = profiles().unwrap();
        for name in ["pi4-4gb", "pi5-8gb", "jetson-orin-nano-8gb", "phone-6gb", "host"] {
            let p = &all[name];
            assert!(!p.note.is_empty());
            if name != "host" {
                assert!(p.threads > 0 && p.memory.unwrap() > (1 << 30), "{p:?}");
            }
        }
        assert_eq!(all["pi4-4gb"].memory, Some(3 << 30));
    }

    #[test]
    fn unknown_profile_lists_names() {
        let e = profile("pi3").unwrap_err().to_string();
        assert!(e.contains("pi3") && e.contains("pi4-4gb") && e.contains("phone-6gb"), "{e}");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512MiB").unwrap(), Some(512 << 20));
        assert_eq!(parse_memory("2.5GiB").unwrap(), Some((2.5 * (1u64 << 30) as f64) as u64));
        assert_eq!(parse_memory("none").unwrap(), None);
        assert!(parse_memory("3 parsecs").is_err());
        assert!(parse_profiles("[x]\nthreads = 1\nmemory = \"1GiB\"\nnote = \"\"\n").is_err());
        assert!(parse_profiles("[x]\nthreads = 1\nnote = \"n\"\n").is_err());
    }
}
