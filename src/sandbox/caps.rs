//! Caps that make this machine behave like a smaller one, enforced on a child process:
//! CPU affinity and a thread count, a memory limit through a memory cgroup (v2 `memory.max`, else
//! v1 `memory.limit_in_bytes`, else `RLIMIT_AS`), and an optional CPU quota through the cpu cgroup
//! (`cpu.max` or `cpu.cfs_quota_us`). The child joins its cgroup before `exec` (in `pre_exec`), so
//! it is capped from its first instruction; the cgroup is removed when the child is gone, also when
//! it was killed.

use crate::util::mem::format_size_short;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to enforce.
#[derive(Clone, Debug, Default)]
pub struct Caps {
    /// CPUs the child may run on.
    pub cpus: Vec<usize>,
    pub memory: Option<u64>,
    pub cpu_quota: Option<f64>,
}

/// How each cap was enforced, for the output.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Enforcement {
    pub memory: String,
    pub cpu_quota: String,
    pub affinity: String,
    /// The cgroup directories made for the child (removed once it is gone).
    pub cgroups: Vec<PathBuf>,
    /// The memory cap asked for could not be enforced (a kernel without the memory cgroup
    /// controller, as Raspberry Pi OS ships): the run had the device's own memory.
    pub memory_unenforced: Option<Unenforced>,
}

/// A memory cap that could not be enforced, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Unenforced {
    /// The cap asked for, bytes.
    pub requested: u64,
    pub reason: String,
    /// The device's own memory (MemTotal), the cap the run really had.
    pub device_memory: Option<u64>,
}

impl Unenforced {
    pub fn warning(&self, profile: &str) -> String {
        format!(
            "{profile}'s memory cap of {} cannot be enforced: {}; the run had the device's own memory ({}) as its cap",
            format_size_short(self.requested),
            self.reason,
            self.device_memory.map_or_else(|| "unknown".into(), format_size_short)
        )
    }
}

/// Why this machine cannot cap memory with a cgroup although it has a cgroup filesystem: its kernel
/// has no memory controller, or has it disabled (Raspberry Pi OS's kernels disable it by default;
/// Docker's and k3s's guides have users add `cgroup_memory=1 cgroup_enable=memory`). None:
/// the controller is there (or there is no cgroup filesystem at all, where RLIMIT_AS stands in).
pub fn memory_controller_missing() -> Option<String> {
    let v2 = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .filter_map(|b| fs::read_to_string(Path::new(b).join("cgroup.controllers")).ok())
        .collect::<Vec<_>>();
    let v1_any = ["cpu", "cpuset", "pids", "cpu,cpuacct"].iter().any(|c| Path::new("/sys/fs/cgroup").join(c).is_dir());
    let v1_memory = Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    if v1_memory || v2.iter().any(|c| c.split_whitespace().any(|x| x == "memory")) || (v2.is_empty() && !v1_any) {
        return None;
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let disabled_in_proc = cgroups.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 4 && f[0] == "memory" && f[3] == "0"
    });
    let why = if cmdline.split_whitespace().any(|w| w == "cgroup_disable=memory") {
        "the kernel boots with cgroup_disable=memory (/proc/cmdline)"
    } else if disabled_in_proc {
        "the kernel's memory cgroup controller is disabled (/proc/cgroups: Raspberry Pi OS's kernels disable it unless told otherwise)"
    } else {
        "this kernel has no memory cgroup controller"
    };
    Some(format!(
        "{why}; on a Raspberry Pi, add `cgroup_memory=1 cgroup_enable=memory` to the kernel command line \
         (/boot/firmware/cmdline.txt, or /boot/cmdline.txt on older images) and reboot"
    ))
}

/// How the child ended.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Peak resident set of the child after it exec'd (its VmHWM, sampled every 50 ms; 0 if it
    /// died before the first sample), bytes. Not `ru_maxrss`: that counts the parent's image the
    /// child inherited at fork. A child that reports its own VmHWM is more exact.
    pub max_rss: u64,
    /// The memory cgroup's OOM killer killed the child.
    pub oom_killed: bool,
    pub timed_out: bool,
    pub enforcement: Enforcement,
}

const PREFIX: &str = "microscale-";
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// A cgroup (one directory per controller hierarchy) that is removed on drop.
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    memory_dir: Option<(PathBuf, u8)>,
}

impl Cgroup {
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Did the kernel's OOM killer kill a process of this cgroup? The kernel counts its kills:
    /// v2 `memory.events` and v1 `memory.oom_control` both have an `oom_kill` line. (v1's
    /// `memory.failcnt` only counts allocations that hit the limit and were reclaimed: not a kill.)
    pub fn oom_killed(&self) -> bool {
        let Some((dir, version)) = &self.memory_dir else { return false };
        let file = if *version == 2 { "memory.events" } else { "memory.oom_control" };
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        oom_kill_count(&text) > 0
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // The child is reaped before this runs; give the kernel a moment to release the cgroup.
            for _ in 0..50 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The `oom_kill N` counter of a `memory.events` / `memory.oom_control` file.
pub fn oom_kill_count(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// This process's cgroup path in a hierarchy (`/proc/self/cgroup`), e.g. for controller "memory".
fn own_path(controller: Option<&str>) -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        match controller {
            None if ctrls.is_empty() => return path.to_string(),
            Some(c) if ctrls.split(',').any(|x| x == c) => return path.to_string(),
            _ => {}
        }
    }
    "/".into()
}

fn join(base: &str, own: &str) -> PathBuf {
    PathBuf::from(base).join(own.trim_start_matches('/'))
}

/// Where new cgroups for a controller can go: (parent directory, cgroup version).
fn parent_for(controller: &str) -> Option<(PathBuf, u8)> {
    // cgroup v2 with the controller available here.
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let ctl = Path::new(base).join("cgroup.controllers");
        if let Ok(c) = fs::read_to_string(&ctl) {
            if c.split_whitespace().any(|x| x == controller) {
                let dir = join(base, &own_path(None));
                let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
                if enabled.split_whitespace().any(|x| x == controller)
                    || fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}")).is_ok()
                {
                    return Some((dir, 2));
                }
            }
        }
    }
    // cgroup v1 hierarchy for the controller.
    let base = format!("/sys/fs/cgroup/{controller}");
    if Path::new(&base).join("cgroup.procs").exists() {
        let own = join(&base, &own_path(Some(controller)));
        return Some((if own.exists() { own } else { PathBuf::from(base) }, 1));
    }
    None
}

fn new_dir(parent: &Path) -> Result<PathBuf> {
    let name = format!("{PREFIX}{}-{}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed));
    let dir = parent.join(name);
    fs::create_dir(&dir).with_context(|| format!("cannot create cgroup {}", dir.display()))?;
    Ok(dir)
}

/// Remove empty cgroups left by earlier runs that were killed themselves.
pub fn remove_stale_cgroups() {
    for controller in ["memory", "cpu"] {
        if let Some((parent, _)) = parent_for(controller) {
            if let Ok(entries) = fs::read_dir(&parent) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let pid_alive = name
                        .strip_prefix(PREFIX)
                        .and_then(|r| r.split('-').next())
                        .and_then(|p| p.parse::<i32>().ok())
                        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
                    if name.starts_with(PREFIX) && !pid_alive {
                        let _ = fs::remove_dir(e.path());
                    }
                }
            }
        }
    }
}

/// Set up cgroups for the caps; report what enforces what (RLIMIT_AS is applied at spawn).
fn make_cgroup(caps: &Caps, enf: &mut Enforcement) -> Result<(Option<Cgroup>, bool)> {
    let mut cg = Cgroup { dirs: vec![], memory_dir: None };
    let mut use_rlimit = false;
    if let Some(limit) = caps.memory {
        match parent_for("memory") {
            Some((parent, 2)) => {
                let dir = new_dir(&parent)?;
                fs::write(dir.join("memory.max"), limit.to_string())?;
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                enf.memory = format!("cgroup v2 memory.max = {limit}");
                cg.memory_dir = Some((dir.clone(), 2));
                cg.dirs.push(dir);
            }
            Some((parent, _)) => {
                let dir = new_dir(&parent)?;
                fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())
                    .with_context(|| format!("cannot set {}", dir.join("memory.limit_in_bytes").display()))?;
                let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
                let _ = fs::write(dir.join("memory.swappiness"), "0");
                enf.memory = format!("cgroup v1 memory.limit_in_bytes = {limit}");
                cg.memory_dir = Some((dir.clone(), 1));
                cg.dirs.push(dir);
            }
            None => match memory_controller_missing() {
                // Not RLIMIT_AS here: on such a device the cap would bound address space, not
                // memory, and a model that fits could be refused for its reservations.
                Some(reason) => {
                    let device_memory = crate::util::mem::total_memory();
                    enf.memory = format!("not enforced: {reason}");
                    enf.memory_unenforced = Some(Unenforced { requested: limit, reason, device_memory });
                }
                None => {
                    use_rlimit = true;
                    enf.memory =
                        format!("RLIMIT_AS = {limit} (no writable memory cgroup; caps address space, not RSS)");
                }
            },
        }
    } else {
        enf.memory = "none".into();
    }
    if let Some(q) = caps.cpu_quota {
        let period = 100_000u64;
        let quota = ((q * period as f64) as u64).max(1000);
        match parent_for("cpu") {
            Some((parent, 2)) => {
                let dir = if let Some((d, 2)) = &cg.memory_dir { d.clone() } else { new_dir(&parent)? };
                fs::write(dir.join("cpu.max"), format!("{quota} {period}"))?;
                enf.cpu_quota = format!("cgroup v2 cpu.max = {quota} {period}");
                if !cg.dirs.contains(&dir) {
                    cg.dirs.push(dir);
                }
            }
            Some((parent, _)) => {
                let dir = new_dir(&parent)?;
                fs::write(dir.join("cpu.cfs_period_us"), period.to_string())?;
                fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                enf.cpu_quota = format!("cgroup v1 cpu.cfs_quota_us = {quota} / {period}");
                cg.dirs.push(dir);
            }
            None => bail!("--cpu-quota needs a writable cpu cgroup, and this host has none"),
        }
    } else {
        enf.cpu_quota = "none".into();
    }
    Ok((if cg.dirs.is_empty() { None } else { Some(cg) }, use_rlimit))
}

/// Run `cmd` under `caps`, killing it after `timeout`; collect its output and resource use.
pub fn run_capped(cmd: Command, caps: &Caps, timeout: Duration) -> Result<Outcome> {
    run_capped_with(cmd, caps, timeout, Passthrough::default())
}

/// Which of our standard streams a capped child uses directly (the rest are pipes, or nothing
/// for its input). Its standard error is always collected: that is where a failure's last words are.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough {
    /// Our standard input (an interactive chat under caps).
    pub stdin: bool,
    /// Our standard output (a generation printed as it happens; `Outcome::stdout` is then empty).
    pub stdout: bool,
}

/// [`run_capped`], with some of the child's standard streams passed straight through to ours.
pub fn run_capped_with(mut cmd: Command, caps: &Caps, timeout: Duration, io: Passthrough) -> Result<Outcome> {
    let mut enf = Enforcement::default();
    let (cgroup, use_rlimit) = make_cgroup(caps, &mut enf)?;
    enf.cgroups = cgroup.as_ref().map(|c| c.paths().to_vec()).unwrap_or_default();
    enf.affinity = if caps.cpus.is_empty() { "none".into() } else { format!("sched_setaffinity {:?}", caps.cpus) };
    let setup = ChildSetup {
        procs: cgroup
            .as_ref()
            .map(|c| c.procs_files().iter().map(|p| CString::new(p.to_string_lossy().as_bytes()).unwrap()).collect())
            .unwrap_or_default(),
        cpus: caps.cpus.clone(),
        rlimit: if use_rlimit { caps.memory } else { None },
        parent: std::process::id() as i32,
    };
    cmd.stdin(if io.stdin { Stdio::inherit() } else { Stdio::null() })
        .stdout(if io.stdout { Stdio::inherit() } else { Stdio::piped() })
        .stderr(Stdio::piped());
    // A failed GGML_ASSERT would otherwise attach gdb to print a backtrace: slow, and noise in the
    // stderr the parent reads for the child's last words.
    cmd.env("GGML_NO_BACKTRACE", "1");
    // SAFETY: `apply` makes only async-signal-safe calls, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
    let mut child = cmd.spawn().context("cannot start the measuring child")?;
    let pid = child.id() as i32;
    let out_reader = child.stdout.take().map(read_all);
    let err_reader = read_all(child.stderr.take().expect("piped"));
    let watch = Watch::start(pid, timeout);
    let mut status = 0;
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    watch.done.store(true, Ordering::SeqCst);
    if rc < 0 {
        bail!("waiting for the measuring child failed: {}", std::io::Error::last_os_error());
    }
    let exit = std::process::ExitStatus::from_raw(status);
    let oom_killed = cgroup.as_ref().is_some_and(|c| c.oom_killed()) && exit.signal() == Some(libc::SIGKILL);
    drop(cgroup); // the child is reaped: remove its cgroups now
    Ok(Outcome {
        stdout: out_reader.map(|r| r.join().unwrap_or_default()).unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        exit_code: exit.code(),
        signal: exit.signal(),
        max_rss: watch.peak.load(Ordering::SeqCst),
        oom_killed,
        timed_out: watch.timed_out.load(Ordering::SeqCst),
        enforcement: enf,
    })
}

/// What the child does to itself between fork and exec: die with its parent, join its cgroups,
/// pin its CPUs, cap its address space.
struct ChildSetup {
    /// The cgroups' `cgroup.procs` files.
    procs: Vec<CString>,
    cpus: Vec<usize>,
    rlimit: Option<u64>,
    parent: i32,
}

impl ChildSetup {
    /// Runs in the forked child: only async-signal-safe calls (prctl, getppid, open/write/close,
    /// sched_setaffinity, setrlimit), no allocation.
    fn apply(&self) -> std::io::Result<()> {
        let fail = || Err(std::io::Error::last_os_error());
        unsafe {
            // The child dies with its parent: a killed sweep or bench leaves no orphan measuring
            // (or writing) on its own.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != self.parent {
                return fail();
            }
            let mut digits = [0u8; 20];
            let mut n = libc::getpid() as u64;
            let mut i = digits.len();
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for path in &self.procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, digits[i..].as_ptr() as *const _, digits.len() - i) < 0 {
                    return fail();
                }
                libc::close(fd);
            }
            if !self.cpus.is_empty() {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &c in &self.cpus {
                    libc::CPU_SET(c, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return fail();
                }
            }
            if let Some(limit) = self.rlimit {
                let r = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                    return fail();
                }
            }
        }
        Ok(())
    }
}

/// A pipe read to the end on its own thread (so that a chatty child never blocks on a full pipe).
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// A thread that watches a running child: kills it at the timeout, and samples its peak RSS.
struct Watch {
    done: Arc<AtomicBool>,
    timed_out: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl Watch {
    fn start(pid: i32, timeout: Duration) -> Watch {
        let w = Watch {
            done: Arc::new(AtomicBool::new(false)),
            timed_out: Arc::new(AtomicBool::new(false)),
            peak: Arc::new(AtomicU64::new(0)),
        };
        let (done, timed_out, peak) = (w.done.clone(), w.timed_out.clone(), w.peak.clone());
        let own_cmdline = fs::read("/proc/self/cmdline").unwrap_or_default();
        std::thread::spawn(move || {
            let step = Duration::from_millis(50);
            let mut waited = Duration::ZERO;
            while !done.load(Ordering::SeqCst) {
                if waited >= timeout {
                    timed_out.store(true, Ordering::SeqCst);
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    break;
                }
                if let Some(hwm) = hwm_after_exec(pid, &own_cmdline) {
                    peak.fetch_max(hwm, Ordering::SeqCst);
                }
                std::thread::sleep(step);
                waited += step;
            }
        });
        w
    }
}

/// A child's VmHWM once it runs its own program (its command line is no longer ours).
fn hwm_after_exec(pid: i32, parent_cmdline: &[u8]) -> Option<u64> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if cmdline.is_empty() || cmdline == parent_cmdline {
        return None;
    }
    crate::util::mem::peak_rss_of(Some(pid))
}

/// The CPUs this process may run on.
pub fn available_cpus() -> Vec<usize> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    if !ok {
        return (0..crate::engine::default_threads()).collect();
    }
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}
