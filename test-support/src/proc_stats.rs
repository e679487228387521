//! What the tests and the calls benchmark read from /proc: a process's CPU time and RSS.
//! (/proc/stat's machine-wide figures are sampled at ticks and miss
//! FreeSWITCH's short, timer-aligned bursts, so they are not used.)

/// Linux reports process times in USER_HZ ticks, 100 per second on every mainstream ABI.
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time of the process and all its threads, dead or alive, in µs.
pub fn cpu_us(pid: impl std::fmt::Display) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/<pid>/stat");
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 1_000_000 / TICKS_PER_SECOND
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: impl std::fmt::Display) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time of the process's live threads named `name`, in µs.
pub fn threads_cpu_us(pid: impl std::fmt::Display, name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| task.ok())
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name))
        .map(|task| cpu_us(format!("{pid}/task/{}", task.file_name().to_string_lossy())))
        .sum()
}

/// Voluntary plus involuntary context switches of one task (`pid` or
/// `pid/task/tid`): how often it was put to sleep or preempted, so about
/// how often it woke. /proc/<pid>/status counts the main thread alone.
pub fn context_switches(task: impl std::fmt::Display) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{task}/status")) else { return 0 };
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Context switches of the process's live threads named `name`, summed.
pub fn threads_context_switches(pid: impl std::fmt::Display, name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| task.ok())
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name))
        .map(|task| context_switches(format!("{pid}/task/{}", task.file_name().to_string_lossy())))
        .sum()
}
