//! glibc malloc's arena count for the `voicerag` process.
//!
//! glibc gives threads up to 8 arenas per core, and each arena keeps the memory freed into it for
//! its own threads. The pipeline's work moves between many threads (the blocking pool, the query
//! embedder's sessions, the reranker's thread, the store's), so freed buffers pile up in arenas the
//! next allocation does not use: in a soak this held ~200 MiB free within 30 s of load. A few
//! arenas shared by all threads keep that down at no measurable cost on a few cores.

/// Caps malloc's arenas at `arenas` (0: glibc's default). glibc's own `MALLOC_ARENA_MAX`, when
/// set, is left in charge. Returns the cap applied, if any.
pub fn limit_arenas(arenas: usize) -> Option<usize> {
    if arenas == 0 || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    apply(arenas)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply(arenas: usize) -> Option<usize> {
    let n = i32::try_from(arenas).unwrap_or(i32::MAX);
    // SAFETY: mallopt only changes an allocator parameter; M_ARENA_MAX limits arenas created later.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) } == 1;
    if !ok {
        tracing::warn!(
            arenas,
            "mallopt(M_ARENA_MAX) refused; glibc's default arenas"
        );
    }
    ok.then_some(arenas)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply(_arenas: usize) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_leaves_glibc_alone_and_a_cap_is_applied() {
        assert_eq!(limit_arenas(0), None);
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        if glibc && std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            assert_eq!(limit_arenas(2), Some(2));
        }
    }
}
