//! Group commit of OrderPayed and CancelOrder on SQLite: one `BEGIN IMMEDIATE` on the one writer for a batch of
//! commands (docs/architecture.md, "Group commit"). Each call runs the per-call body ([`super::command_in`]: load,
//! decide, settle, write) in turn inside its own savepoint, so a refused or failing call is rolled back to its
//! savepoint and fails alone, and a later call sees what the earlier ones wrote. One commit, one WAL sync, for the
//! whole batch.

use super::{SqliteStore, command_in};
use crate::{
    domain::LomsError,
    storage::batch::{BatchKind, CommandAnswer, CommandBatch, CommandCall, commit_failed},
};

#[async_trait::async_trait]
impl CommandBatch for SqliteStore {
    async fn try_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError> {
        let mut tx = self.write().await?;
        let mut answers = Vec::with_capacity(calls.len());
        let mut skus = Vec::new();
        let mut wrote = false;
        for call in calls {
            sqlx::query("savepoint command").execute(&mut *tx).await?;
            match command_in(&mut tx, call.order, &call.command, call.traceparent.as_deref()).await {
                Ok(Some(written)) => {
                    wrote = true;
                    skus.extend(written.skus);
                    answers.push(written.reply);
                }
                Ok(None) => answers.push(Ok(())),
                Err(error) => {
                    sqlx::query("rollback to command").execute(&mut *tx).await?;
                    answers.push(Err(error));
                }
            }
            sqlx::query("release command").execute(&mut *tx).await?;
        }
        if !wrote {
            // Only refusals and steps already done: nothing to commit (and no WAL sync to pay for).
            tx.rollback().await?;
            return Ok(answers);
        }
        if let Err(error) = self.after_commit.commit(tx, skus).await {
            return Ok(commit_failed(BatchKind::Command, calls.len(), &error));
        }
        Ok(answers)
    }

    async fn command_alone(&self, call: &CommandCall) -> CommandAnswer {
        self.try_command(call.order, &call.command, call.traceparent.as_deref()).await
    }
}
