//! The machine the figures were measured on, and process memory from `/proc`.

use serde::Serialize;

/// CPU, cores, memory, kernel and load when the run started.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages at the start of the run.
    pub load_average: String,
    /// Soft and hard limits on open files of this process.
    pub open_files_limit: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    /// Describes this machine (Linux `/proc`; fields it cannot read are `unknown`/0).
    pub fn describe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let load: Vec<String> = read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .map(str::to_owned)
            .collect();
        let limits = read("/proc/self/limits");
        let open_files_limit = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!(
                    "{} soft / {} hard",
                    f.get(3).unwrap_or(&"?"),
                    f.get(4).unwrap_or(&"?")
                )
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_average: load.join(" "),
            open_files_limit,
        }
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "{} ({} cores), {} GiB RAM, Linux {}, load average at start {}, open files {}",
            self.cpu_model,
            self.cores,
            self.memory_gib,
            self.kernel,
            self.load_average,
            self.open_files_limit
        )
    }
}

/// The current load average (1, 5, 15 min).
pub fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    read(&path)
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Resident set size of `pid` (this process when `None`), in bytes.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|k| k * 1024)
}

/// Peak resident set size (`VmHWM`) of `pid` (this process when `None`), in bytes.
pub fn peak_rss_bytes(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|k| k * 1024)
}

/// Raises this process's soft open-files limit to its hard limit; returns the new soft limit.
pub fn raise_open_files_limit() -> u64 {
    let current = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: current.maximum,
        maximum: current.maximum,
    };
    if rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).is_ok() {
        current.maximum.unwrap_or(u64::MAX)
    } else {
        current.current.unwrap_or(u64::MAX)
    }
}

/// The current soft open-files limit.
pub fn open_files_soft_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}
