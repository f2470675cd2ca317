//! Child processes that can never outlive the harness.
//!
//! Every child is spawned from one long-lived supervisor thread with `PR_SET_PDEATHSIG=SIGKILL`:
//! the kernel ties that signal to the *thread* that forked, so spawning from a short-lived test
//! thread would kill the child as soon as that thread ends. The supervisor thread lives as long as
//! the process, so children get SIGKILL exactly when the harness process dies (even on SIGKILL or
//! a panic). On a normal exit an `atexit` hook kills whatever is still registered, and [`Proc`]
//! kills its child on drop.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Process ids of children that have not been reaped yet; killed by the `atexit` hook.
static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
static SUPERVISOR: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

extern "C" fn kill_live_children() {
    // Never block at exit: if the lock is poisoned or held, still try the set we can see.
    let pids: Vec<i32> = match LIVE.try_lock() {
        Ok(set) => set.iter().copied().collect(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().iter().copied().collect(),
        Err(std::sync::TryLockError::WouldBlock) => Vec::new(),
    };
    for &pid in &pids {
        // SAFETY: kill(2) with a pid we spawned and have not reaped (so it cannot be recycled).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    // Reap them too: in containers whose PID 1 does not reap, orphans would stay zombies.
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child; SIGKILL makes this return promptly.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
    }
}

fn supervisor() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    SUPERVISOR.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("skjold-e2e-supervisor".into())
            .spawn(move || {
                // The sender lives in a static, so this loop only ends with the process.
                for (mut cmd, reply) in rx {
                    let spawned = cmd.spawn();
                    if let Ok(child) = &spawned {
                        register(child.id());
                    }
                    // The requester may have given up; the child is then owned by nobody but
                    // stays registered and is killed at exit.
                    let _ = reply.send(spawned);
                }
            })
            .expect("spawning the supervisor thread (OS refused to create a thread)");
        // SAFETY: registering a plain extern "C" fn without captured state.
        unsafe {
            libc::atexit(kill_live_children);
        }
        Mutex::new(tx)
    })
}

fn register(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
    }
}

fn unregister(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
    }
}

/// Spawns `cmd` from the supervisor thread with SIGKILL-on-parent-death and its own process
/// group (so a terminal's Ctrl-C reaches only us and we stop children in order).
fn spawn_supervised(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id();
    cmd.process_group(0);
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would ever kill us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    supervisor()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("supervisor thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("supervisor thread dropped the spawn request"))?
}

/// A supervised child process with its output in a log file; killed on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Signal the whole process group on stop, not only the child: for wrappers such as
    /// `nsenter` that fork the real process and do not pass signals on.
    group: bool,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {} for {name}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child =
            spawn_supervised(cmd).with_context(|| format!("starting {name} ({program})"))?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            group: false,
        })
    }

    /// Makes [`Proc::stop`] and [`Proc::kill`] signal the child's whole process group (it leads
    /// its own group), so a wrapper's forked child gets the signal too.
    pub fn signal_group(mut self) -> Proc {
        self.group = true;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, or 0 once stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the process log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Ok while the process runs; an error with its exit status and log tail once it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(anyhow!("{} was stopped", self.name));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                unregister(child.id());
                Err(anyhow!(
                    "{} exited ({status}); last log lines from {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(40)
                ))
            }
            Err(e) => Err(anyhow!("checking {}: {e}", self.name)),
        }
    }

    /// Graceful stop: SIGTERM, then SIGKILL after `grace`. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if let Ok(Some(_)) = child.try_wait() {
            unregister(pid);
            return;
        }
        if let Ok(raw) = i32::try_from(pid) {
            let target = if self.group { -raw } else { raw };
            // SAFETY: signalling our own unreaped child (or the group it leads).
            unsafe {
                libc::kill(target, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                unregister(pid);
                tracing::debug!(name = %self.name, pid, "stopped");
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.kill_group(pid);
        let _ = child.kill();
        let _ = child.wait();
        unregister(pid);
        tracing::debug!(name = %self.name, pid, "killed after grace period");
    }

    /// Immediate SIGKILL (simulates a crash). Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            self.kill_group(pid);
            let _ = child.kill();
            let _ = child.wait();
            unregister(pid);
        }
    }
}

impl Proc {
    fn kill_group(&self, pid: u32) {
        if let (true, Ok(raw)) = (self.group, i32::try_from(pid)) {
            // SAFETY: SIGKILL to the process group our unreaped child leads.
            unsafe {
                libc::kill(-raw, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file, or a note saying why it could not be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_terminates_and_unregisters() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = Proc::spawn("sleep", cmd, &dir.path().join("sleep.log")).unwrap();
        let pid = p.pid() as i32;
        assert!(LIVE.lock().unwrap().contains(&pid));
        p.check_running().unwrap();
        p.stop(Duration::from_secs(5));
        assert!(!LIVE.lock().unwrap().contains(&pid));
        assert!(p.check_running().is_err());
    }

    #[test]
    fn exited_child_reports_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first; echo boom >&2; exit 3"]);
        let mut p = Proc::spawn("sh", cmd, &dir.path().join("sh.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match p.check_running() {
                Err(e) => break e.to_string(),
                Ok(()) if Instant::now() > deadline => panic!("sh did not exit"),
                Ok(()) => thread::sleep(Duration::from_millis(20)),
            }
        };
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("boom"), "{err}");
        assert_eq!(log_tail(p.log_path(), 1), "boom");
    }

    #[test]
    fn kill_reaps_child_in_its_own_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = Proc::spawn("sleep", cmd, &dir.path().join("s.log")).unwrap();
        let pid = p.pid();
        // SAFETY: getpgid on our own child.
        let pgid = unsafe { libc::getpgid(pid as i32) };
        assert_eq!(pgid, pid as i32, "child must lead its own process group");
        p.kill();
        assert_eq!(p.pid(), 0);
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
    }

    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    }
}
