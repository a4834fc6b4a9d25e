//! Group commit of CreateOrder on SQLite: one `BEGIN IMMEDIATE` on the one writer for a whole batch of calls
//! (docs/architecture.md, "Group commit"). Each call runs the per-call path ([`super::create_in`]: replay, or place
//! and write) in turn inside its own savepoint, so a later call sees the earlier calls' orders and reservations
//! (the answers are those of running the calls one by one in the batch's order), and a call whose statements fail
//! is rolled back to its savepoint and fails alone. One commit, one WAL sync, for the whole batch.

use super::{SqliteStore, create_in};
use crate::{
    domain::{CreateOrder, LomsError},
    storage::batch::{BatchKind, CreateAnswer, CreateBatch, commit_failed},
};

#[async_trait::async_trait]
impl CreateBatch for SqliteStore {
    async fn try_create_batch(&self, calls: &[CreateOrder]) -> Result<Vec<CreateAnswer>, LomsError> {
        let mut tx = self.write().await?;
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            sqlx::query("savepoint create_order").execute(&mut *tx).await?;
            match create_in(&mut tx, call).await {
                Ok(answer) => answers.push(answer),
                Err(error) => {
                    tracing::warn!(%error, "a CreateOrder call of a batch failed; its neighbours go on");
                    sqlx::query("rollback to create_order").execute(&mut *tx).await?;
                    answers.push(Err(error));
                }
            }
            sqlx::query("release create_order").execute(&mut *tx).await?;
        }
        let skus: Vec<_> = calls.iter().flat_map(|call| call.lines.iter().map(|(sku, _)| sku)).collect();
        if let Err(error) = self.after_commit.commit(tx, skus).await {
            return Ok(commit_failed(BatchKind::Create, calls.len(), &error));
        }
        Ok(answers)
    }
}
