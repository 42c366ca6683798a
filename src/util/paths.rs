//! The one output policy every command that writes follows, checked before any work is done.
//!
//! A command names its inputs and outputs with the flags they came from; [`IoPaths::check`]
//! resolves every path (canonical, following links; a file reached through a hard link is the same
//! file) and refuses, in one line naming both paths and both flags:
//! - an output that is an input, lies inside an input directory, or contains an input;
//! - an output given twice;
//! - an existing output that is not what the command writes (a character device, a FIFO, a socket,
//!   a directory where a file goes): renaming over `/dev/null` would replace the device node;
//! - an input that is neither a regular file nor a directory (opening a FIFO as a model blocks).
//!
//! Outputs are then written through [`super::atomic`]: a temporary file beside the target, renamed
//! when complete.

use anyhow::{bail, Result};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// What an output path receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A file written whole (a temporary file renamed into place).
    File,
    /// A file appended to (CSV rows).
    Append,
    /// A directory created whole (it must not contain an input).
    Dir,
    /// A directory the command fills with these entries only (a sweep's `results.csv`,
    /// `variants/`, ...): an input elsewhere in it is safe, one at or under an entry is not.
    Filled(&'static [&'static str]),
}

/// Two lists of [`OutputKind::Filled`] entries as one (a command that fills a directory as
/// another command does, and more).
pub const fn concat_entries<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    assert!(a.len() + b.len() == N, "N is the lists' total length");
    let mut out = [""; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - a.len()];
        i += 1;
    }
    out
}

#[derive(Clone, Debug)]
struct Named {
    flag: String,
    path: PathBuf,
}

/// The paths one command reads and writes, by flag.
#[derive(Clone, Debug, Default)]
pub struct IoPaths {
    inputs: Vec<Named>,
    outputs: Vec<(Named, OutputKind)>,
    /// Files read when they exist, written when not, that belong to no other flag.
    reused: Vec<Named>,
}

/// An existing path, resolved: where it is and which file it is.
struct Resolved {
    path: PathBuf,
    /// (device, inode) of an existing file or directory.
    id: Option<(u64, u64)>,
    is_dir: bool,
}

impl IoPaths {
    pub fn new() -> IoPaths {
        IoPaths::default()
    }

    pub fn input(mut self, flag: &str, path: impl AsRef<Path>) -> IoPaths {
        self.inputs.push(Named { flag: flag.to_string(), path: path.as_ref().to_path_buf() });
        self
    }

    pub fn input_opt(self, flag: &str, path: Option<impl AsRef<Path>>) -> IoPaths {
        match path {
            Some(p) => self.input(flag, p),
            None => self,
        }
    }

    pub fn inputs<P: AsRef<Path>>(self, flag: &str, paths: impl IntoIterator<Item = P>) -> IoPaths {
        paths.into_iter().fold(self, |io, p| io.input(flag, p))
    }

    pub fn output(mut self, flag: &str, path: impl AsRef<Path>, kind: OutputKind) -> IoPaths {
        self.outputs.push((Named { flag: flag.to_string(), path: path.as_ref().to_path_buf() }, kind));
        self
    }

    pub fn output_opt(self, flag: &str, path: Option<impl AsRef<Path>>, kind: OutputKind) -> IoPaths {
        match path {
            Some(p) => self.output(flag, p, kind),
            None => self,
        }
    }

    /// A file that is read when it exists and written when it does not (`--calib`).
    pub fn reused_or_written(self, flag: &str, path: Option<impl AsRef<Path>>) -> IoPaths {
        match path {
            Some(p) if fs::symlink_metadata(p.as_ref()).is_ok() => {
                let mut io = self.input(flag, p.as_ref());
                io.reused.push(Named { flag: flag.to_string(), path: p.as_ref().to_path_buf() });
                io
            }
            Some(p) => self.output(flag, p, OutputKind::File),
            None => self,
        }
    }

    /// Refuse any output that would destroy an input or is not a place to write; see the module doc.
    pub fn check(&self) -> Result<()> {
        let mut inputs = Vec::new();
        for i in &self.inputs {
            if let Some(r) = resolve_input(i)? {
                inputs.push((i, r));
            }
        }
        // An existing file reused (`--calib`) is read as it is, but must be a file of its own:
        // another input's file, or one inside another input's directory, is not one.
        for r in &self.reused {
            let Some(resolved) = resolve_input(r)? else { continue };
            let other = inputs.iter().find(|(i, ri)| {
                !(i.flag == r.flag && i.path == r.path)
                    && (same(ri, &resolved) || (ri.is_dir && resolved.path.starts_with(&ri.path)))
            });
            if let Some((i, _)) = other {
                bail!(
                    "{}: {} names the {} input {} (or a file inside it), not a file of its own; choose another path",
                    r.path.display(),
                    r.flag,
                    i.flag,
                    i.path.display()
                );
            }
        }
        let mut outputs: Vec<(&Named, Resolved)> = Vec::new();
        for (o, kind) in &self.outputs {
            let r = resolve_output(o, *kind)?;
            for (i, ri) in &inputs {
                refuse_overlap(o, &r, *kind, i, ri)?;
            }
            if let Some((first, _)) = outputs.iter().find(|(_, prev)| same(prev, &r)) {
                bail!(
                    "{}: given as two outputs ({} and {}); choose another path for one of them",
                    o.path.display(),
                    first.flag,
                    o.flag
                );
            }
            outputs.push((o, r));
        }
        Ok(())
    }
}

fn same(a: &Resolved, b: &Resolved) -> bool {
    a.path == b.path || (a.id.is_some() && a.id == b.id)
}

fn file_kind(t: fs::FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// An existing input, resolved (None when it does not exist: the command names that itself).
fn resolve_input(i: &Named) -> Result<Option<Resolved>> {
    let Ok(meta) = fs::metadata(&i.path) else { return Ok(None) };
    if !meta.is_file() && !meta.is_dir() {
        bail!(
            "{}: is {} ({}); microscale reads regular files and directories",
            i.path.display(),
            file_kind(meta.file_type()),
            i.flag
        );
    }
    let path = fs::canonicalize(&i.path).unwrap_or_else(|_| i.path.clone());
    Ok(Some(Resolved { path, id: Some((meta.dev(), meta.ino())), is_dir: meta.is_dir() }))
}

fn resolve_output(o: &Named, kind: OutputKind) -> Result<Resolved> {
    let shown = o.path.display();
    if o.path.as_os_str().is_empty() {
        bail!("an empty path is not an output ({})", o.flag);
    }
    if fs::symlink_metadata(&o.path).is_ok() {
        let Ok(meta) = fs::metadata(&o.path) else {
            bail!("{shown}: a symbolic link to nothing ({}); remove it or choose another path", o.flag)
        };
        let wants_dir = matches!(kind, OutputKind::Dir | OutputKind::Filled(_));
        if meta.is_dir() != wants_dir || !(meta.is_dir() || meta.is_file()) {
            let wanted = if wants_dir { "a directory" } else { "a regular file" };
            bail!(
                "{shown}: is {} ({}), and microscale writes {wanted} there; choose another path",
                file_kind(meta.file_type()),
                o.flag
            );
        }
        let path = fs::canonicalize(&o.path).unwrap_or_else(|_| o.path.clone());
        return Ok(Resolved { path, id: Some((meta.dev(), meta.ino())), is_dir: meta.is_dir() });
    }
    let is_dir = !matches!(kind, OutputKind::File | OutputKind::Append);
    Ok(Resolved { path: resolve_missing(&o.path), id: None, is_dir })
}

/// A path that does not exist (yet), resolved component by component from the root: what exists
/// is followed through its links, what does not is taken as written, `..` stepping back over it
/// (as `create_dir_all` and the final rename will).
fn resolve_missing(path: &Path) -> PathBuf {
    let absolute =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => {
                out.push(other);
                if fs::symlink_metadata(&out).is_ok() {
                    out = fs::canonicalize(&out).unwrap_or(out);
                }
            }
        }
    }
    out
}

fn refuse_overlap(o: &Named, out: &Resolved, kind: OutputKind, i: &Named, input: &Resolved) -> Result<()> {
    let (op, ip) = (o.path.display(), i.path.display());
    if same(out, input) {
        bail!("{op}: {} would overwrite the input {ip} ({}); choose another output path", o.flag, i.flag);
    }
    if input.is_dir && out.path.starts_with(&input.path) {
        bail!("{op}: lies inside the input directory {ip} ({}); write {} somewhere else", i.flag, o.flag);
    }
    let written: Vec<PathBuf> = match kind {
        OutputKind::Filled(entries) => entries.iter().map(|e| out.path.join(e)).collect(),
        OutputKind::Dir => vec![out.path.clone()],
        OutputKind::File | OutputKind::Append => vec![],
    };
    if let Some(w) = written.iter().find(|w| input.path.starts_with(w)) {
        bail!(
            "{op}: contains the input {ip} ({}) where {} writes {}; choose another directory",
            i.flag,
            o.flag,
            w.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(io: IoPaths) -> String {
        io.check().unwrap_err().to_string()
    }

    #[test]
    fn outputs_over_inside_or_around_inputs_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("model");
        fs::create_dir(&model).unwrap();
        fs::write(model.join("model.safetensors"), b"x").unwrap();
        let im = d.path().join("im.gguf");
        fs::write(&im, b"y").unwrap();
        let io = || IoPaths::new().input("SRC", &model).input("--imatrix", &im);
        let e = err(io().output("-o", model.join("model.safetensors"), OutputKind::File));
        assert!(e.contains("lies inside the input directory") && e.contains("SRC"), "{e}");
        let e = err(io().output("-o", &im, OutputKind::File));
        assert!(e.contains("overwrite the input") && e.contains("--imatrix") && e.contains("-o"), "{e}");
        // Through a relative path with `..`, a symbolic link and a hard link.
        let e = err(io().output("-o", model.join("../im.gguf"), OutputKind::File));
        assert!(e.contains("overwrite the input"), "{e}");
        std::os::unix::fs::symlink(&im, d.path().join("link.gguf")).unwrap();
        assert!(err(io().output("-o", d.path().join("link.gguf"), OutputKind::File)).contains("overwrite the input"));
        fs::hard_link(&im, d.path().join("hard.gguf")).unwrap();
        assert!(err(io().output("-o", d.path().join("hard.gguf"), OutputKind::File)).contains("overwrite the input"));
        // A new file inside a directory that does not exist yet, inside the input.
        let e = err(io().output("-o", model.join("new/sub/x.gguf"), OutputKind::File));
        assert!(e.contains("inside the input directory"), "{e}");
        // A directory output around an input.
        let e = err(io().output("--out", d.path(), OutputKind::Dir));
        assert!(e.contains("contains the input"), "{e}");
        // Two outputs at one path.
        let out = d.path().join("out.csv");
        let e = err(io().output("--save-kld-base", &out, OutputKind::File).output("--csv", &out, OutputKind::Append));
        assert!(e.contains("two outputs") && e.contains("--csv"), "{e}");
        // A directory filled with named entries may hold inputs elsewhere, not under an entry.
        let filled = OutputKind::Filled(&["results.csv", "variants"]);
        io().output("--out", d.path(), filled).check().unwrap();
        fs::create_dir(d.path().join("variants")).unwrap();
        fs::write(d.path().join("variants/grid.toml"), b"g").unwrap();
        let e = err(io().input("--grid", d.path().join("variants/grid.toml")).output("--out", d.path(), filled));
        assert!(e.contains("contains the input") && e.contains("--grid") && e.contains("variants"), "{e}");
        // `..` over a directory that does not exist yet steps back into the input.
        let e = err(io().output("--out", d.path().join("nothere/../model/runs"), OutputKind::Dir));
        assert!(e.contains("inside the input directory"), "{e}");
        // A reused file (`--calib`) must be one of its own, not another input or inside one.
        let e = err(io().reused_or_written("--calib", Some(&im)));
        assert!(e.contains("--calib") && e.contains("--imatrix"), "{e}");
        let e = err(io().reused_or_written("--calib", Some(model.join("model.safetensors"))));
        assert!(e.contains("--calib") && e.contains("SRC"), "{e}");
        let own = d.path().join("calib.gguf");
        fs::write(&own, b"c").unwrap();
        io().reused_or_written("--calib", Some(&own)).check().unwrap();
        // What is fine: new paths, through a linked directory and a `..`.
        io().output("-o", d.path().join("new.gguf"), OutputKind::File).check().unwrap();
        io().output("--out", d.path().join("sweep/run1"), OutputKind::Dir).check().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.path().join("linked")).unwrap();
        io().output("-o", d.path().join("linked/x.gguf"), OutputKind::File).check().unwrap();
        io().output("-o", model.join("../y.gguf"), OutputKind::File).check().unwrap();
        // ... and a linked directory that leads into the input does not escape the check.
        std::os::unix::fs::symlink(&model, elsewhere.path().join("into-model")).unwrap();
        let e = err(io().output("-o", elsewhere.path().join("into-model/z.gguf"), OutputKind::File));
        assert!(e.contains("inside the input directory"), "{e}");
    }

    #[test]
    fn devices_fifos_and_dangling_links_are_not_outputs_and_fifos_not_inputs() {
        let d = tempfile::tempdir().unwrap();
        let null = d.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        let e = err(IoPaths::new().output("-o", &null, OutputKind::File));
        assert!(e.contains("character device"), "{e}");
        let fifo = d.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let e = err(IoPaths::new().output("--csv", &fifo, OutputKind::Append));
        assert!(e.contains("a FIFO"), "{e}");
        let e = err(IoPaths::new().input("MODEL", &fifo));
        assert!(e.contains("a FIFO") && e.contains("MODEL"), "{e}");
        std::os::unix::fs::symlink(d.path().join("nothing"), d.path().join("dangling")).unwrap();
        let e = err(IoPaths::new().output("-o", d.path().join("dangling"), OutputKind::File));
        assert!(e.contains("symbolic link to nothing"), "{e}");
        let e = err(IoPaths::new().output("-o", d.path(), OutputKind::File));
        assert!(e.contains("is a directory"), "{e}");
    }
}
