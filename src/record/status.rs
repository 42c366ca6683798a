//! How a measured child process ended, named for what it was: it ran (`fits`), the memory cap
//! killed it or its allocations failed under the cap (`oom`: only this one means "does not fit"),
//! it died on a signal (`crash`), it reported an error (`error`), or it ran out of time
//! (`timeout`). `sandbox::failure` tells which from how the process ended.

use serde::{Deserialize, Serialize};

/// The exit code of a child that ran out of memory and said so (an allocation failed inside
/// llama.cpp or microscale: the RLIMIT_AS cap, or a host without enough memory).
pub const EXIT_OUT_OF_MEMORY: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Fits,
    Oom,
    Crash,
    Error,
    Timeout,
}

impl Status {
    pub const ALL: [Status; 5] = [Status::Fits, Status::Oom, Status::Crash, Status::Error, Status::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fits => "fits",
            Status::Oom => "oom",
            Status::Crash => "crash",
            Status::Error => "error",
            Status::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
