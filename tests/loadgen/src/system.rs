//! What the machine is, and how much memory a process holds (Linux /proc).

use serde::Serialize;

/// VmRSS of `pid` (`None`: this process) in kB; `None` where /proc has no answer.
pub fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    kb_field(&status, "VmRSS:")
}

/// `VmRSS:     12345 kB` → 12345.
fn kb_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(field))?.split_whitespace().next()?.parse().ok()
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_total_mb: Option<u64>,
}

impl Machine {
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_total_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| kb_field(&info, "MemTotal:"))
            .map(|kb| kb / 1024);
        Self { cpus, cpu_model, memory_total_mb }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kb_fields() {
        let status = "Name:\tloadgen\nVmHWM:\t   20000 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(kb_field(status, "VmRSS:"), Some(12_345));
        assert_eq!(kb_field(status, "VmSwap:"), None);
    }

    #[test]
    fn own_memory_is_readable() {
        assert!(rss_kb(None).is_some_and(|kb| kb > 0));
    }
}
