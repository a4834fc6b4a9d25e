//! What a store does after a commit, never before: wake this process's outbox relay (an event the relay could
//! read before its commit would not be there yet) and drop the cached stock of the skus whose free units the write
//! moved, from the Stocks cache and from the levels a batch of new orders is decided on ([`KnownLevels`]). A write
//! that decided its stock over a [`Ledger`] of rows it locked gives the known levels those rows as it left them
//! instead ([`AfterCommit::after_ledger`]). Both keep free units only (on hand − reserved), so a write that did not
//! move them (a payment) need not name its skus; a caller that does not tell names every sku it touched.

use std::sync::Arc;

use sqlx::{Database, Transaction};
use tokio::sync::Notify;

use super::{known_levels::KnownLevels, stock_cache::StockCache};
use crate::domain::{Ledger, LomsError, Sku, StockLevel};

/// The relay's wake-up and the Stocks cache of one process.
#[derive(Debug, Clone)]
pub(super) struct AfterCommit {
    /// A signal sent while the relay is busy is kept as a permit, so none is lost.
    outbox: Arc<Notify>,
    pub(super) stock: StockCache,
    /// Remembered by the batches of new orders after their commits, refreshed by the other writes of orders that
    /// locked their rows, forgotten by the writes that moved free units without reading them.
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
        Self::commit_then(tx, |committed| self.after(skus, committed)).await
    }

    /// Commits a write that decided its stock over `ledger` (the rows it locked), then as
    /// [`AfterCommit::after_ledger`].
    pub(super) async fn commit_ledger<DB: Database>(
        &self,
        tx: Transaction<'static, DB>,
        ledger: &Ledger,
    ) -> Result<(), LomsError>
    where
        LomsError: From<sqlx::Error>,
    {
        Self::commit_then(tx, |committed| self.after_ledger(ledger, &[], committed)).await
    }

    /// Commits `tx`, then runs `after` with whether it is known to have committed.
    async fn commit_then<DB: Database>(tx: Transaction<'static, DB>, after: impl FnOnce(bool)) -> Result<(), LomsError>
    where
        LomsError: From<sqlx::Error>,
    {
        super::batch::committing();
        let committed = tx.commit().await;
        after(committed.is_ok());
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

    /// What follows the COMMIT of a write that decided its stock over `ledger` (the rows it locked, or a batch of
    /// new orders knew, as it left them), `committed` or of unknown outcome. Only the skus whose free units it moved
    /// leave the Stocks cache (a payment keeps it true), either way. Once committed the relay is woken, and the known
    /// levels take the ledger's rows: the skus of `whole`, whose every warehouse row the ledger holds (a batch of new
    /// orders locks or knows them all), are remembered whole ([`KnownLevels::remember`]); the other rows refresh the
    /// skus known ([`KnownLevels::refresh`]). Of an unknown outcome the known levels forget the moved skus, as
    /// [`AfterCommit::after`] does.
    pub(super) fn after_ledger(&self, ledger: &Ledger, whole: &[Sku], committed: bool) {
        let moved = ledger.skus_with_free_units_moved();
        if committed {
            let levels = ledger.levels();
            let (rows_of_whole, others): (Vec<StockLevel>, Vec<StockLevel>) =
                levels.into_iter().partition(|level| whole.contains(&level.sku));
            self.known.remember(whole, &rows_of_whole);
            self.known.refresh(&others);
            self.stock.changed(moved);
            self.outbox.notify_one();
        } else {
            self.after(moved, false);
        }
    }

    /// What the relay waits on.
    pub(super) fn outbox_written(&self) -> Arc<Notify> {
        self.outbox.clone()
    }
}
