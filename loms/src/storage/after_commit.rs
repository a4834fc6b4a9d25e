//! What a store does after a commit, never before: wake this process's outbox relay (an event the relay could
//! read before its commit would not be there yet) and drop the cached stock of the skus whose free units the write
//! moved, from the Stocks cache and from the levels a batch of new orders is decided on ([`KnownLevels`]). Both
//! keep free units only (on hand − reserved), so a write that did not move them (a payment) need not name its
//! skus; a caller that does not tell names every sku it touched.

use std::sync::Arc;

use sqlx::{Database, Transaction};
use tokio::sync::Notify;

use super::{known_levels::KnownLevels, stock_cache::StockCache};
use crate::domain::{LomsError, Sku};

/// The relay's wake-up and the Stocks cache of one process.
#[derive(Debug, Clone)]
pub(super) struct AfterCommit {
    /// A signal sent while the relay is busy is kept as a permit, so none is lost.
    outbox: Arc<Notify>,
    pub(super) stock: StockCache,
    /// Remembered by the batches of new orders after their commits; forgotten by every write that moves free units.
    pub(super) known: KnownLevels,
}

impl AfterCommit {
    pub(super) fn new(stock: StockCache) -> Self {
        Self { outbox: Arc::default(), stock, known: KnownLevels::default() }
    }

    /// Commits a write that changed the stock of `skus` (and may have written outbox events), then drops those
    /// skus from the cache and wakes the relay (a wake-up without events costs it one empty poll).
    pub(super) async fn commit<DB: Database>(
        &self,
        tx: Transaction<'static, DB>,
        skus: impl IntoIterator<Item = Sku>,
    ) -> Result<(), LomsError>
    where
        LomsError: From<sqlx::Error>,
    {
        super::batch::committing();
        let committed = tx.commit().await;
        self.after(skus, committed.is_ok());
        Ok(committed?)
    }

    /// What follows a COMMIT of a write that changed the stock of `skus`, `committed` or of unknown outcome: the
    /// skus leave the cache either way (a commit whose reply was lost may still have happened); the relay is woken
    /// only for a commit known to have happened.
    pub(super) fn after(&self, skus: impl IntoIterator<Item = Sku>, committed: bool) {
        let skus: Vec<Sku> = skus.into_iter().collect();
        self.known.forget(skus.iter().copied());
        self.stock.changed(skus);
        if committed {
            self.outbox.notify_one();
        }
    }

    /// What the relay waits on.
    pub(super) fn outbox_written(&self) -> Arc<Notify> {
        self.outbox.clone()
    }
}
