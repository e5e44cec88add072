//! What the process holds while a benchmark runs: RSS split into anonymous and file-backed pages,
//! what the allocator holds (in use and free), threads by name, and the store's share of RAM, so
//! that growth over a soak can be attributed instead of read as one number.

use serde::Serialize;
use std::collections::BTreeMap;

const MIB: f64 = 1024.0 * 1024.0;

/// RSS (whole, anonymous, file-backed; MiB) and thread count of this process, from
/// /proc/self/status (zeros elsewhere), and the allocator's own view.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Usage {
    pub rss_mb: f64,
    pub rss_anon_mb: f64,
    pub rss_file_mb: f64,
    pub threads: u64,
    /// Heap bytes handed out by malloc (every arena, and its direct mmaps), in MiB.
    pub heap_used_mb: f64,
    /// Bytes malloc holds but has not handed out (free chunks in its arenas), in MiB: what
    /// fragmentation keeps resident, at most (free pages may have been given back to the OS).
    pub heap_free_mb: f64,
}

/// This process's usage now.
pub fn process_usage() -> Usage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut usage = usage_from_status(&status);
    (usage.heap_used_mb, usage.heap_free_mb) = malloc_usage();
    usage
}

pub(crate) fn usage_from_status(status: &str) -> Usage {
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mb = |name: &str| field(name) as f64 / 1024.0;
    Usage {
        rss_mb: mb("VmRSS:"),
        rss_anon_mb: mb("RssAnon:"),
        rss_file_mb: mb("RssFile:"),
        threads: field("Threads:"),
        ..Usage::default()
    }
}

/// (in use, held free) by glibc's malloc over all arenas, in MiB; zeros with another libc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_usage() -> (f64, f64) {
    // SAFETY: mallinfo2 only reads the allocator's statistics (it takes each arena's lock).
    let info = unsafe { libc::mallinfo2() };
    let used = info.uordblks + info.hblkhd;
    (used as f64 / MIB, info.fordblks as f64 / MIB)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_usage() -> (f64, f64) {
    (0.0, 0.0)
}

/// CPU time this process has used so far (user + system, every thread), in ms; 0 where
/// `getrusage` fails. The difference over a load is the load's CPU cost, whatever the machine's
/// other load: the figure to compare builds by on shared cores.
pub fn process_cpu_ms() -> f64 {
    // SAFETY: getrusage only writes the struct it is handed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// This process's threads counted by name (/proc/self/task/*/comm; empty elsewhere). Digits are
/// folded to `#`, so numbered pool threads count as one kind.
pub fn threads_by_name() -> BTreeMap<String, u64> {
    let mut names = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return names;
    };
    for task in tasks.flatten() {
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue; // the thread ended meanwhile
        };
        *names.entry(thread_kind(&comm)).or_default() += 1;
    }
    names
}

fn thread_kind(comm: &str) -> String {
    comm.trim()
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_proc_status_in_mib() {
        let status = "Name:\tvoicerag\nVmRSS:\t  204800 kB\nRssAnon:\t  153600 kB\n\
                      RssFile:\t   51200 kB\nRssShmem:\t       0 kB\nThreads:\t17\n";
        let u = usage_from_status(status);
        assert_eq!(
            (u.rss_mb, u.rss_anon_mb, u.rss_file_mb, u.threads),
            (200.0, 150.0, 50.0, 17)
        );
        let none = usage_from_status("");
        assert_eq!((none.rss_mb, none.threads), (0.0, 0));
    }

    #[test]
    fn numbered_threads_count_as_one_kind() {
        assert_eq!(thread_kind("rayon-worker-12\n"), "rayon-worker-##");
        assert_eq!(thread_kind("tokio-runtime-w"), "tokio-runtime-w");
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_allocator_sees_a_live_block_and_this_thread() {
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let during = process_usage();
        assert!(during.heap_used_mb >= 64.0, "{during:?}");
        drop(block);
        let names = threads_by_name();
        assert!(names.values().sum::<u64>() >= 1, "{names:?}");
    }

    #[test]
    fn cpu_time_grows_with_work_on_this_thread() {
        let before = process_cpu_ms();
        // Work until the thread has used 50 ms of CPU by its own clock: on a loaded machine
        // wall time says nothing, and a fixed loop could finish inside one clock tick.
        let thread_ms = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime only writes the struct it is handed.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6
        };
        let start = thread_ms();
        let mut x = 0u64;
        while thread_ms() - start < 50.0 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let used = process_cpu_ms() - before;
        assert!(before > 0.0 && used >= 40.0, "before {before}, used {used}");
    }
}
