//! Group commit of OrderPayed and CancelOrder on PostgreSQL: one transaction for a batch of commands on distinct
//! orders (docs/architecture.md, "Group commit"; [`crate::storage::batch::rounds`] keeps the orders distinct). It
//! locks every order of the batch in one statement in id order, runs [`decide`] for each call, and settles and
//! writes every plan as the sweep does ([`settle_and_write`]: the held stock of all of them locked in one
//! statement, one [`crate::domain::Ledger`], one write), then commits once. Locks are taken in the global order —
//! orders by id, then stock rows by `(sku, warehouse_id)` — as by every other transaction, so a batch cannot
//! deadlock with another batch, a single call or the sweep.
//!
//! The calls are decided by [`DecidedCommands`]. A deadlock or serialization failure runs the batch again; any
//! other failure before COMMIT runs its calls one by one on the per-call path; a failed COMMIT answers every call
//! UNAVAILABLE.

use super::{PgStore, lock_orders, settle_and_write};
use crate::{
    domain::LomsError,
    storage::{
        batch::{BatchKind, CommandAnswer, CommandBatch, CommandCall, commit_failed},
        command_batches::{DecidedCommands, distinct_orders},
    },
};

#[async_trait::async_trait]
impl CommandBatch for PgStore {
    async fn try_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError> {
        Self::with_retry(|| self.attempt_command_batch(calls)).await
    }

    async fn command_alone(&self, call: &CommandCall) -> CommandAnswer {
        Self::with_retry(|| self.try_command(call.order, &call.command, call.traceparent.as_deref())).await
    }
}

impl PgStore {
    /// One attempt at the batch. `Err` only when nothing was committed; a failed COMMIT (whose outcome is unknown)
    /// answers every call with the failure instead, so no call is run twice.
    async fn attempt_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError> {
        let ids = distinct_orders(calls)?;
        let mut tx = self.pool.begin().await?;
        let decided = DecidedCommands::decide(calls, lock_orders(&mut tx, &ids).await?)?;
        if decided.writes_nothing() {
            tx.rollback().await?;
            return Ok(decided.answers());
        }
        settle_and_write(&mut tx, &decided.plans()).await?;
        if let Err(error) = self.after_commit.commit(tx, decided.skus()).await {
            return Ok(commit_failed(BatchKind::Command, calls.len(), &error));
        }
        Ok(decided.answers())
    }
}
