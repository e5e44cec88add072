//! [`StoreClosed`]: whether a [`super::MemoryStore`] is gone, with everything it opened.
//!
//! A caller that must open the same data directory again as soon as a store is dropped (a
//! restart in the same process) cannot watch the store's `Arc`: its strong count reaches 0 as
//! the drop *starts*, while the background threads are still being joined and the writer lock,
//! LMDB and tantivy are still held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the store it was taken from has been dropped entirely: threads joined, LMDB and
/// tantivy closed, the writer lock released. Cheap to clone and to poll.
#[derive(Clone, Debug, Default)]
pub struct StoreClosed(Arc<AtomicBool>);

impl StoreClosed {
    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The store's last field: fields drop in declaration order, so this one drops after all the
/// others, and sets the flag then.
#[derive(Debug, Default)]
pub(crate) struct SetOnDrop(StoreClosed);

impl SetOnDrop {
    pub fn signal(&self) -> StoreClosed {
        self.0.clone()
    }
}

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.0.store(true, Ordering::Release);
    }
}
