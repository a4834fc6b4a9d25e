//! Group commit of OrderPayed and CancelOrder on PostgreSQL: one transaction for a batch of commands on distinct
//! orders (docs/architecture.md, "Group commit"; [`crate::storage::batch::rounds`] keeps the orders distinct). It
//! locks every order of the batch in one statement in id order, runs [`decide`] for each call, and settles and
//! writes every plan as the sweep does ([`settle_and_write`]: the held stock of all of them locked in one
//! statement, one [`crate::domain::Ledger`], one write), then commits once. Locks are taken in the global order —
//! orders by id, then stock rows by `(sku, warehouse_id)` — as by every other transaction, so a batch cannot
//! deadlock with another batch, a single call or the sweep.
//!
//! One call cannot fail its neighbours: an unknown order, a refused step and a step already done are that call's
//! answer, decided before anything is written. A deadlock or serialization failure runs the batch again; any other
//! failure before COMMIT runs its calls one by one on the per-call path; a failed COMMIT answers every call
//! UNAVAILABLE.

use std::collections::{HashMap, HashSet};

use super::{PgStore, lock_orders, settle_and_write};
use crate::{
    domain::{LomsError, OrderId, OrderState, Plan, Sku, decide},
    storage::{
        batch::{BatchKind, CommandAnswer, CommandBatch, CommandCall, commit_failed},
        records::Traced,
    },
};

/// How one call of a batch is answered.
enum Outcome {
    /// Decided without a write: an unknown order, a refusal, or a step already done.
    Now(CommandAnswer),
    /// By the plan at this position of the batch's plans, once they are committed.
    Planned(usize),
}

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
        let ids: Vec<OrderId> = calls.iter().map(|call| call.order).collect();
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            // Each order is locked, decided and written once: a second call on it would be answered wrongly.
            // `rounds` keeps this from happening; should it, the calls run one by one.
            return Err(LomsError::Internal("an order twice in one command batch".into()));
        }
        let mut tx = self.pool.begin().await?;
        let mut locked: HashMap<OrderId, OrderState> =
            lock_orders(&mut tx, &ids).await?.into_iter().map(|order| (order.id, order)).collect();
        // Each plan with the trace of the call it answers, for its events.
        let mut planned: Vec<(OrderState, Plan, Option<&str>)> = Vec::new();
        let mut outcomes = Vec::with_capacity(calls.len());
        for call in calls {
            let Some(order) = locked.remove(&call.order) else {
                outcomes.push(Outcome::Now(Err(LomsError::OrderNotFound(call.order))));
                continue;
            };
            outcomes.push(match decide(&order, &call.command) {
                Ok(Some(plan)) => {
                    planned.push((order, plan, call.traceparent.as_deref()));
                    Outcome::Planned(planned.len() - 1)
                }
                Ok(None) => Outcome::Now(Ok(())),
                Err(refusal) => Outcome::Now(Err(refusal)),
            });
        }
        if planned.is_empty() {
            tx.rollback().await?;
        } else {
            let batch: Vec<Traced<'_>> = planned.iter().map(|(order, plan, trace)| (order, plan, *trace)).collect();
            settle_and_write(&mut tx, &batch).await?;
            let skus: Vec<Sku> =
                planned.iter().flat_map(|(order, ..)| order.lines.iter().map(|(sku, _)| sku)).collect();
            if let Err(error) = self.after_commit.commit(tx, skus).await {
                return Ok(commit_failed(BatchKind::Command, calls.len(), &error));
            }
        }
        let mut replies: Vec<Option<CommandAnswer>> =
            planned.into_iter().map(|(_, plan, _)| Some(plan.reply)).collect();
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Now(answer) => answer,
                Outcome::Planned(position) => replies[position].take().expect("each plan answers one call"),
            })
            .collect())
    }
}
