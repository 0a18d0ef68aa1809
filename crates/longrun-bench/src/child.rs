//! The driver and its child processes (this same executable, re-invoked with a hidden
//! subcommand) talk one line at a time over the child's stdin and stdout:
//!
//! ```text
//! child:  ready [URL]     driver: start     child: started
//! driver: stop (or closes stdin)            child: exits
//! ```
//!
//! The child's stderr is the driver's, so its logs land in the run's log.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};
use tokio::process::{ChildStdin, ChildStdout, Command};

/// How long a child may take to exit once told to stop.
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// A child process seen from the driver.
pub struct Child {
    name: &'static str,
    process: tokio::process::Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Child {
    /// Starts `current_exe() args...`; killed if dropped while running.
    pub fn spawn(name: &'static str, args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut process = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name} process"))?;
        let stdin = process.stdin.take();
        let stdout = BufReader::new(process.stdout.take().expect("piped stdout")).lines();
        Ok(Self {
            name,
            process,
            stdin,
            stdout,
        })
    }

    /// Waits for the line starting with `word`; returns the rest of it.
    pub async fn expect(&mut self, word: &str) -> anyhow::Result<String> {
        match self.stdout.next_line().await? {
            Some(line) if line.split(' ').next() == Some(word) => {
                Ok(line[word.len()..].trim().to_owned())
            }
            Some(line) => bail!("{}: expected `{word}`, got `{line}`", self.name),
            None => bail!("{}: exited before saying `{word}`", self.name),
        }
    }

    /// Sends one line.
    pub async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Tells the child to stop and waits for it to exit (killing it after a grace period).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.send("stop").await;
        drop(self.stdin.take());
        match tokio::time::timeout(EXIT_GRACE, self.process.wait()).await {
            Ok(status) => {
                let status = status?;
                ensure!(status.success(), "{} exited with {status}", self.name);
                Ok(())
            }
            Err(_) => {
                self.process.kill().await?;
                bail!("{} did not stop within {EXIT_GRACE:?}; killed", self.name)
            }
        }
    }
}

/// The driver seen from a child process.
pub struct Parent {
    stdin: Lines<BufReader<Stdin>>,
}

impl Parent {
    /// The parent on this process's stdin/stdout.
    pub fn new() -> Self {
        Self {
            stdin: BufReader::new(tokio::io::stdin()).lines(),
        }
    }

    /// Sends one line.
    pub fn say(&self, line: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A parent that went away closes stdin too, which ends this process.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    /// Waits for `start`; `false` when told to stop (or stdin closed) first.
    pub async fn started(&mut self) -> anyhow::Result<bool> {
        match self.stdin.next_line().await?.as_deref().map(str::trim) {
            Some("start") => Ok(true),
            Some("stop") | None => Ok(false),
            Some(other) => bail!("expected `start`, got `{other}`"),
        }
    }

    /// Resolves when told to stop or when stdin closes.
    pub async fn stopped(&mut self) {
        while let Ok(Some(line)) = self.stdin.next_line().await {
            if line.trim() == "stop" {
                return;
            }
        }
    }
}
