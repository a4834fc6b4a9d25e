//! New order ids taken from `orders_id_seq` ahead of need, a block at a time, so that a batch of new orders knows
//! its ids before it sends anything (the one-flight batch of [`super::batch`]). They are the sequence's, so unique
//! across replicas; ids of a block left unused when the process stops are never given out, a gap like the one a
//! rolled-back insert leaves. Ids no longer rise in the order orders are created in, across replicas or across the
//! batch's two ways of writing (nothing relies on it: every order reads in `created_at` or `id` order only for
//! its own history).

use std::collections::VecDeque;

use minizon_common::db::PgPool;
use tokio::sync::Mutex;

use crate::{
    domain::{LomsError, OrderId},
    storage::decode::stored_order_id,
};

/// Ids taken at once: one round trip per this many new orders.
const BLOCK: usize = 256;

/// The ids taken and not given out yet.
#[derive(Debug, Default)]
pub(super) struct OrderIds {
    spare: Mutex<VecDeque<OrderId>>,
}

impl OrderIds {
    /// `count` new ids, taking a block from the sequence first when too few are left.
    pub(super) async fn take(&self, pool: &PgPool, count: usize) -> Result<Vec<OrderId>, LomsError> {
        let mut spare = self.spare.lock().await;
        if spare.len() < count {
            let wanted = i32::try_from((count - spare.len()).max(BLOCK))
                .map_err(|_| LomsError::Internal("a batch too large".into()))?;
            let ids: Vec<i64> = sqlx::query_scalar("select nextval('orders_id_seq') from generate_series(1, $1)")
                .bind(wanted)
                .fetch_all(&mut *pool.acquire().await?)
                .await?;
            for id in ids {
                spare.push_back(stored_order_id(id)?);
            }
        }
        Ok(spare.drain(..count).collect())
    }
}
