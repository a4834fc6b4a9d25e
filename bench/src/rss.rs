//! Resident memory of the service processes under test, from Linux's `/proc/<pid>/status`.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A service process to watch, given on the command line as `name=pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The service's name in the report.
    pub name: String,
    /// Its process id.
    pub pid: u32,
}

impl FromStr for Watched {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, pid) = text.split_once('=').ok_or_else(|| format!("expected name=pid, got {text:?}"))?;
        let pid = pid.parse().map_err(|_| format!("{pid:?} is not a process id"))?;
        Ok(Self { name: name.to_owned(), pid })
    }
}

/// Memory of one process at one moment, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Highest resident set size since the process started (`VmHWM`).
    pub peak_kib: u64,
}

/// The memory of process `pid`, or `None` when it is gone or this is not Linux.
pub fn sample(pid: u32) -> Option<Memory> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Reads `VmRSS` and `VmHWM` from the text of a `/proc/<pid>/status` file.
pub fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
}

/// A service's peak memory over the whole benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeakMemory {
    /// The service.
    pub service: String,
    /// Its process id.
    pub pid: u32,
    /// `VmHWM` at the end of the run, in KiB.
    pub peak_kib: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_peak_are_read_from_a_status_file() {
        let status = "Name:\tloms\nVmPeak:\t  900000 kB\nVmHWM:\t   48236 kB\nVmRSS:\t   40012 kB\nThreads:\t5\n";

        assert_eq!(parse_status(status), Some(Memory { rss_kib: 40012, peak_kib: 48236 }));
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn a_watched_process_is_given_as_name_equals_pid() {
        assert_eq!("loms=1234".parse(), Ok(Watched { name: "loms".into(), pid: 1234 }));
        assert!("loms".parse::<Watched>().is_err());
        assert!("loms=abc".parse::<Watched>().is_err());
    }
}
