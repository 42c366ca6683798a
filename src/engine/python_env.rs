//! The Python environment the phones' runtimes and converters run in (LiteRT's interpreter and
//! litert-torch, coremltools): made by `scripts/export-env.sh` with every package pinned, kept out
//! of the Rust build. Found at `$MICROSCALE_EXPORT_ENV`, else `.venv-export` in the current
//! directory or in microscale's source tree; made there by that script the first time it is
//! needed, when the script is at hand.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const ENV_VAR: &str = "MICROSCALE_EXPORT_ENV";
const STAMP: &str = ".microscale-requirements.sha256";

/// A ready environment: its interpreter.
pub struct PythonEnv {
    pub python: PathBuf,
}

fn source_tree() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the environment is or will be made.
pub fn env_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_VAR) {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from(".venv-export");
    if here.join(STAMP).exists() {
        return here;
    }
    source_tree().join(".venv-export")
}

fn is_ready(dir: &Path) -> bool {
    dir.join(STAMP).is_file() && dir.join("bin/python").exists()
}

impl PythonEnv {
    /// The environment, made first (by `scripts/export-env.sh`, several GB) when it is missing.
    pub fn ready(quiet: bool) -> Result<PythonEnv> {
        let dir = env_dir();
        if !is_ready(&dir) {
            let script = source_tree().join("scripts/export-env.sh");
            if !script.is_file() {
                bail!(
                    "{}: no export environment, and no scripts/export-env.sh to make it (run it from microscale's source tree, or set {ENV_VAR})",
                    dir.display()
                );
            }
            if !quiet {
                eprintln!("making the export environment {} (scripts/export-env.sh, once)", dir.display());
            }
            let st = Command::new(&script)
                .arg(&dir)
                .stdout(Stdio::null())
                .status()
                .with_context(|| format!("{}: cannot run", script.display()))?;
            if !st.success() || !is_ready(&dir) {
                bail!("{}: making the export environment failed ({st})", script.display());
            }
        }
        Ok(PythonEnv { python: dir.join("bin/python") })
    }

    /// Run `script` (Python source) with `args`, `input` on its stdin; its stdout when it
    /// succeeds. On failure the error is its last line of stderr (the converters' own message),
    /// and the whole stderr is kept in `log` when given.
    pub fn run(
        &self,
        what: &str,
        script: &str,
        args: &[&std::ffi::OsStr],
        input: &[u8],
        log: Option<&Path>,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.run_streaming(what, script, args, input, log, &mut |stdout| {
            stdout.read_to_end(&mut out)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// As [`PythonEnv::run`], with the script's stdout handed to `read` while it runs (for
    /// answers too large to hold whole: a window's logits at a time). When the script fails, its
    /// own message is the error, whatever `read` made of the stream's end.
    pub fn run_streaming(
        &self,
        what: &str,
        script: &str,
        args: &[&std::ffi::OsStr],
        input: &[u8],
        log: Option<&Path>,
        read: &mut dyn FnMut(&mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let file = ScriptFile::write(script)?;
        let mut child = Command::new(&self.python)
            .arg(&file.0)
            .args(args)
            // Quiet the converters' and TensorFlow's chatter; errors still reach stderr.
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{}: cannot run", self.python.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let mut stderr_pipe = child.stderr.take().expect("piped");
        let stderr_reader = std::thread::spawn(move || {
            let mut err = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut err);
            err
        });
        let mut stdout = child.stdout.take().expect("piped");
        let read_result = read(&mut stdout);
        if read_result.is_err() && !exits_soon(&mut child) {
            // The answer was wrong while the script went on: stop it, and say what was wrong.
            let _ = child.kill();
            let _ = child.wait();
            return read_result.with_context(|| format!("{what}: reading its answer"));
        }
        // Whatever was not read is drained, so the script is never blocked on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        let status = child.wait()?;
        let _ = writer.join();
        let stderr = stderr_reader.join().unwrap_or_default();
        if let Some(log) = log {
            std::fs::write(log, &stderr).with_context(|| format!("{}: cannot write", log.display()))?;
        }
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            let last = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
            bail!("{what} failed ({}): {last}", describe(&status));
        }
        read_result.with_context(|| format!("{what}: reading its answer"))
    }
}

/// Whether the child ends within a few seconds of its output ending (it failed on its own, and
/// its message says why) rather than running on.
fn exits_soon(child: &mut std::process::Child) -> bool {
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// A script written for one run, removed after it.
struct ScriptFile(PathBuf);

impl ScriptFile {
    fn write(text: &str) -> Result<ScriptFile> {
        let path = std::env::temp_dir().join(format!("microscale-{}.py", crate::util::atomic::unique_suffix()));
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(ScriptFile(path))
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn describe(st: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (_, Some(9)) => "killed by SIGKILL: out of memory?".into(),
        (_, Some(s)) => format!("signal {s}"),
        (Some(c), _) => format!("exit {c}"),
        _ => "unknown status".into(),
    }
}
