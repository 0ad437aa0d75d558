//! Memory of a process from `/proc/PID/smaps_rollup` (RSS and PSS), and finding daemons by their
//! exact command name (`/proc/PID/comm`).

/// RSS and PSS of one or more processes, in KiB.
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl Memory {
    pub fn rss_mb(self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn pss_mb(self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, other: Memory) -> Memory {
        Memory {
            rss_kib: self.rss_kib + other.rss_kib,
            pss_kib: self.pss_kib + other.pss_kib,
        }
    }
}

/// Parses the `Rss:` and `Pss:` lines of a smaps_rollup file.
pub fn parse_smaps_rollup(text: &str) -> Memory {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("Rss:"),
        pss_kib: field("Pss:"),
    }
}

/// Memory of one process (zero if it is gone).
pub fn of_pid(pid: u32) -> Memory {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map(|t| parse_smaps_rollup(&t))
        .unwrap_or_default()
}

/// PIDs whose `/proc/PID/comm` is exactly `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// Memory of all processes with that exact command name.
pub fn of_named(name: &str) -> Memory {
    pids_named(name)
        .into_iter()
        .map(of_pid)
        .fold(Memory::default(), |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rollup() {
        let text = "55d0-7ff [rollup]\nRss:               12345 kB\nPss:                6789 kB\nPss_Anon:  1 kB\n";
        let m = parse_smaps_rollup(text);
        assert_eq!((m.rss_kib, m.pss_kib), (12345, 6789));
    }

    #[test]
    fn own_process_has_memory() {
        let m = of_pid(std::process::id());
        assert!(m.rss_kib > 0 && m.pss_kib > 0, "{m:?}");
    }
}
