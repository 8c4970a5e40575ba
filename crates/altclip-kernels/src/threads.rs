//! How many threads the kernels run on: one per physical core by default
//! (a GEMM's second hyperthread only contends for the same FMA units).

use std::collections::HashSet;

/// Physical cores this process may use: distinct `(physical id, core id)`
/// pairs in `/proc/cpuinfo`, at most the CPUs it may run on. `None` where
/// the topology cannot be read.
pub fn physical_cores() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let cores = count_cores(&info)?;
    let allowed = std::thread::available_parallelism().map_or(cores, |n| n.get());
    Some(cores.min(allowed))
}

/// Distinct `(physical id, core id)` pairs of a `/proc/cpuinfo` text.
fn count_cores(cpuinfo: &str) -> Option<usize> {
    let mut cores = HashSet::new();
    for block in cpuinfo.split("\n\n") {
        let field = |name: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        if let Some(core) = field("core id") {
            cores.insert((field("physical id").unwrap_or_default(), core));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// Starts rayon's global pool, which the kernels run on, with `requested`
/// threads, else `RAYON_NUM_THREADS` when set, else one per physical core.
/// Returns the threads in use; call it before anything else uses rayon (a
/// pool that already runs keeps its size, and that size is returned).
pub fn init_threads(requested: Option<usize>) -> usize {
    let from_env = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let threads = requested
        .filter(|&n| n > 0)
        .or(from_env)
        .or_else(physical_cores);
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    // An error means the pool was already built; it keeps its size.
    let _ = builder.build_global();
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperthreads_of_one_core_count_once() {
        let two_sockets = "processor\t: 0\nphysical id\t: 0\ncore id\t\t: 0\n\n\
                           processor\t: 1\nphysical id\t: 0\ncore id\t\t: 0\n\n\
                           processor\t: 2\nphysical id\t: 1\ncore id\t\t: 0\n\n\
                           processor\t: 3\nphysical id\t: 1\ncore id\t\t: 1\n";
        assert_eq!(count_cores(two_sockets), Some(3));
        assert_eq!(count_cores("processor\t: 0\nvendor_id\t: x\n"), None);
    }
}
