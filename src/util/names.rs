//! Names that become file names or table keys: variant names, device names.

use anyhow::{bail, Result};

/// A plain file name: 1 to 200 of A-Z a-z 0-9 . _ + -, not starting with `.` or `-` (so it is never a
/// path, a hidden file or an option).
pub fn check_plain_name(name: &str) -> Result<()> {
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if name.is_empty() || name.len() > 200 || !plain || name.starts_with(['.', '-']) {
        bail!("{name:?} is not a plain name (1 to 200 of A-Z a-z 0-9 . _ + -, not starting with . or -)");
    }
    Ok(())
}
