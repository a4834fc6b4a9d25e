//! Group commit of OrderPayed and CancelOrder on SQLite: one `BEGIN IMMEDIATE` on the one writer for a batch of
//! commands on distinct orders, decided by [`DecidedCommands`] (docs/architecture.md, "Group commit"). Set-based,
//! as on PostgreSQL and as the sweep: every order of the batch is loaded with two statements, the plans' held
//! stock is settled on one ledger with one more, and the plans are written with one statement per table, then
//! committed once; about eight statements a batch, however many calls it holds. The write lock is held from the
//! load to the commit, so every order is decided on what is stored. Any failure before the commit runs the calls
//! one by one on the per-call path, so a call that cannot be written fails alone.

use chrono::Utc;

use super::{SqliteStore, load_orders, settle, write_plans};
use crate::{
    domain::LomsError,
    storage::{
        batch::{BatchKind, CommandAnswer, CommandBatch, CommandCall, commit_failed},
        command_batches::{DecidedCommands, distinct_orders},
    },
};

#[async_trait::async_trait]
impl CommandBatch for SqliteStore {
    async fn try_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError> {
        let ids = distinct_orders(calls)?;
        let mut tx = self.write().await?;
        let now = Utc::now();
        let decided = DecidedCommands::decide(calls, load_orders(&mut tx, &ids, now).await?)?;
        if decided.writes_nothing() {
            // Only refusals and steps already done: nothing to commit (and no WAL sync to pay for).
            tx.rollback().await?;
            return Ok(decided.answers());
        }
        let plans = decided.plans();
        let ledger = settle(&mut tx, &plans).await?;
        write_plans(&mut tx, &plans, &ledger, now).await?;
        drop(plans);
        if let Err(error) = self.after_commit.commit(tx, decided.skus()).await {
            return Ok(commit_failed(BatchKind::Command, calls.len(), &error));
        }
        Ok(decided.answers())
    }

    async fn command_alone(&self, call: &CommandCall) -> CommandAnswer {
        self.try_command(call.order, &call.command, call.traceparent.as_deref()).await
    }
}
