//! One supervised child process: spawned from a binary and its arguments with stderr in a log
//! file, killed, stopped, paused and resumed by its PID, and killed when dropped.
//!
//! [`crate::ProcessCluster`], the chaos harness's process backend and the benchmarks'
//! Redis and etcd all run their processes through [`Process`], so that "track what you
//! start, stop it by PID" is written once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often [`Process::stop`] and [`Process::wait_exit`] look whether the process exited:
/// short next to a node's shutdown, long enough not to spin.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// A child process that can be started again after it stops, with the same binary,
/// arguments, environment and log file.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use std::time::Duration;
/// let mut p = revokd_testkit::process::Process::new("node 1", "revokd", ["--help"])
///     .log_to("/tmp/node1.log");
/// p.start()?;
/// p.pause()?;
/// p.resume()?;
/// p.stop(Duration::from_secs(10))?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Process {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    child: Option<Child>,
    paused: bool,
}

impl Process {
    /// A process of `bin` with `args`, not started yet; `name` (for example `node 3`) is what
    /// error messages call it. Without [`Process::log_to`] its output is discarded.
    pub fn new<I, S>(name: impl Into<String>, bin: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Process {
            name: name.into(),
            bin: bin.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            log: None,
            child: None,
            paused: false,
        }
    }

    /// Appends the process's stderr to `path` (created if missing; kept across restarts, so
    /// one file tells a node's whole story).
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Sets an environment variable for every start.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The name error messages use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments it runs with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The log file, if any.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Spawns it; fails if it is already running.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {} ({})", self.name, self.bin.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Its PID while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Running (possibly paused): started and not yet seen to exit.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Stopped by [`Process::pause`].
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Sends `sig` to its PID; fails if it is not running.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("{sig} to {}", self.name))
    }

    /// SIGSTOP.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT, if paused.
    pub fn resume(&mut self) -> Result<()> {
        if self.paused {
            self.signal(Signal::SIGCONT)?;
            self.paused = false;
        }
        Ok(())
    }

    /// `kill -9` and reap it: no shutdown, no flush beyond what it already did. Nothing to do
    /// if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        self.paused = false;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child
            .kill()
            .with_context(|| format!("SIGKILL to {}", self.name))?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM (after SIGCONT if paused) and wait up to `grace` for it to exit, then SIGKILL.
    /// Returns whether it exited by itself; `true` if it was not running.
    pub fn stop(&mut self, grace: Duration) -> Result<bool> {
        if self.child.is_none() {
            return Ok(true);
        }
        self.resume()?;
        self.signal(Signal::SIGTERM)?;
        let deadline = Instant::now() + grace;
        let mut child = self.child.take().expect("running was checked");
        loop {
            if child.try_wait()?.is_some() {
                return Ok(true);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(false);
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// Waits up to `timeout` for it to exit by itself and returns its status; `None` if it
    /// is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| anyhow!("{} is not running", self.name))?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// The last `lines` lines of its log, for failure messages (empty without a log).
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGKILL ends a paused (stopped) process too: no SIGCONT needed.
        let _ = self.kill();
    }
}

/// The `REVOKD_LOG` filter for spawned nodes: the caller's own `REVOKD_LOG` if set, so one
/// variable turns up the logs of every node a test or the harness starts, else `default`.
pub fn revokd_log_filter(default: &str) -> String {
    std::env::var("REVOKD_LOG").unwrap_or_else(|_| default.to_owned())
}
