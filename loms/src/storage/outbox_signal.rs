//! How a store wakes its process's outbox relay: after a commit that wrote events, never before (an event the
//! relay could read before its commit would not be there yet).

use std::sync::Arc;

use sqlx::{Database, Transaction};
use tokio::sync::Notify;

use crate::domain::LomsError;

/// The relay's wake-up; a signal sent while the relay is busy is kept as a permit, so none is lost.
#[derive(Debug, Clone, Default)]
pub(super) struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Commits a transaction that wrote outbox events, then wakes the relay.
    pub(super) async fn commit<DB: Database>(&self, tx: Transaction<'static, DB>) -> Result<(), LomsError>
    where
        LomsError: From<sqlx::Error>,
    {
        tx.commit().await?;
        self.0.notify_one();
        Ok(())
    }

    /// What the relay waits on.
    pub(super) fn notify(&self) -> Arc<Notify> {
        self.0.clone()
    }
}
