//! Gives the memory the C allocator holds free back to the system.
//!
//! glibc's `malloc` returns freed memory to the system only from the top of its heap. After a
//! burst of a thousand proxied connections, each with a few buffers, the heap is fragmented:
//! nearly all of it is free, but a few live allocations near its top pin it, and the process
//! keeps its peak resident size for as long as it runs. `malloc_trim` hands every free page
//! back (with `MADV_DONTNEED`), wherever it lies. The drivers call
//! [`release_free_memory`] when connections have closed; other allocators return large blocks
//! themselves, and there this does nothing.
//!
//! erebus forbids `unsafe` everywhere else; this one foreign call lives here, on its own.

#![deny(missing_docs)]

/// Asks the C allocator to give the memory it holds free back to the system. Returns whether
/// it released any. Costs a walk over the allocator's free lists (tens of microseconds for a
/// heap of tens of MiB), so callers do it after connections close, not per packet.
pub fn release_free_memory() -> bool {
    trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // The one foreign call; see the module docs.
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches only glibc's own free lists, under
    // the arena locks every allocation takes; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_goes_back() {
        // Many small blocks, then every other one freed, leave holes that only a trim can
        // give back; whether it releases pages depends on the allocator, so only the call's
        // safety and the heap's integrity afterwards are checked here.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 4096]).collect();
        let mut index = 0;
        blocks.retain(|_| {
            index += 1;
            index % 2 == 0
        });
        let _ = release_free_memory();
        for block in &blocks {
            assert_eq!(block.len(), 4096);
            assert!(block.iter().all(|&b| b == block[0]));
        }
    }
}
