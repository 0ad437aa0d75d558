//! Running swtpm's tools as our own children: a clean, private environment, bounded waits, and
//! always reaping (this sandbox's PID 1 reaps slowly, so we never leave a child behind).

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often a bounded wait polls the child.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The first `FAST_POLL_FOR` of a wait polls every millisecond: the tools a start waits for
/// (swtpm at shutdown, swtpm_localca) usually end within a few ms, and a 5 ms step was a
/// visible part of a pooled TPM's personalization.
const FAST_POLL_FOR: Duration = Duration::from_millis(100);
const FAST_POLL_INTERVAL: Duration = Duration::from_millis(1);

fn poll_pause(started: Instant) {
    std::thread::sleep(if started.elapsed() < FAST_POLL_FOR {
        FAST_POLL_INTERVAL
    } else {
        POLL_INTERVAL
    });
}

/// Gives `cmd` a minimal, private environment: a fixed PATH, and HOME / XDG dirs / TMPDIR inside
/// `private_dir`, so that no tool can read or write a per-user or host-wide swtpm configuration.
pub fn private_env(cmd: &mut Command, private_dir: &Path) {
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", private_dir)
        .env("XDG_CONFIG_HOME", private_dir)
        .env("XDG_RUNTIME_DIR", private_dir)
        .env("TMPDIR", private_dir)
        .env("LC_ALL", "C");
}

/// What became of a bounded wait.
#[derive(Debug)]
pub enum WaitOutcome {
    /// The child exited by itself.
    Exited(ExitStatus),
    /// The deadline passed; the child was killed and reaped.
    TimedOut,
}

/// Waits for `child` until `timeout`; on timeout kills it and reaps it.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<WaitOutcome> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(WaitOutcome::Exited(status));
        }
        if Instant::now() >= deadline {
            kill_and_reap(child);
            return Ok(WaitOutcome::TimedOut);
        }
        poll_pause(started);
    }
}

/// Waits for `child` until `timeout` without killing it; `None` if it is still running.
pub fn wait_bounded_no_kill(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        poll_pause(started);
    }
}

/// Kills and reaps `child`, ignoring "already exited".
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Longest log line kept in an error message (swtpm_setup logs whole EK moduli).
const MAX_LINE_CHARS: usize = 160;

/// The last `n` non-empty lines of `text`, each cut to a readable length, joined with newlines.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| match l.char_indices().nth(MAX_LINE_CHARS) {
            Some((cut, _)) => format!("{}...", &l[..cut]),
            None => (*l).to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a (log) file for an error message; never fails, an unreadable file reads as "".
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_skips_blank_and_keeps_tail() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("", 3), "");
        assert_eq!(last_lines("x", 5), "x");
        let long = "é".repeat(500);
        assert_eq!(last_lines(&long, 1).chars().count(), MAX_LINE_CHARS + 3);
    }

    #[test]
    fn timeout_kills_child() {
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let started = Instant::now();
        let outcome = wait_bounded(&mut child, Duration::from_millis(100)).unwrap();
        assert!(matches!(outcome, WaitOutcome::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(child.try_wait().unwrap().is_some(), "child reaped");
    }
}
