//! A batch of OrderPayed and CancelOrder calls on distinct orders, decided and answered the same way on both
//! backends (docs/architecture.md, "Group commit"): the backend loads (PostgreSQL: locks) every order of the batch
//! at once, [`decide`] runs for each call on its order, and the plans are settled and written together. One call
//! cannot fail its neighbours: an unknown order, a refused step and a step already done are that call's answer,
//! decided before anything is written.

use std::collections::{HashMap, HashSet};

use super::{
    batch::{CommandAnswer, CommandCall},
    records::Traced,
};
use crate::domain::{LomsError, OrderId, OrderState, Plan, Sku, decide};

/// How one call of a batch is answered.
enum Outcome {
    /// Decided without a write: an unknown order, a refusal, or a step already done.
    Now(CommandAnswer),
    /// By the plan at this position of the batch's plans, once they are committed.
    Planned(usize),
}

/// The calls of a command batch, decided.
pub(super) struct DecidedCommands<'a> {
    outcomes: Vec<Outcome>,
    /// Each plan with its order and the trace of the call it answers (for its events).
    planned: Vec<(OrderState, Plan, Option<&'a str>)>,
}

/// The orders `calls` name, each once, or an error when one is named twice: each order is loaded, decided and
/// written once, so a second call on it would be answered wrongly (`rounds` keeps this from happening; should it,
/// the calls run one by one).
pub(super) fn distinct_orders(calls: &[CommandCall]) -> Result<Vec<OrderId>, LomsError> {
    let ids: Vec<OrderId> = calls.iter().map(|call| call.order).collect();
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        return Err(LomsError::Internal("an order twice in one command batch".into()));
    }
    Ok(ids)
}

impl<'a> DecidedCommands<'a> {
    /// Decides each of `calls` on its order among `orders` (as loaded for the batch; an order missing is unknown).
    /// `Err` for a change of lines, which the batches do not write (only payments and cancellations are batched).
    pub(super) fn decide(calls: &'a [CommandCall], orders: Vec<OrderState>) -> Result<Self, LomsError> {
        let mut orders: HashMap<OrderId, OrderState> = orders.into_iter().map(|order| (order.id, order)).collect();
        let mut planned = Vec::new();
        let mut outcomes = Vec::with_capacity(calls.len());
        for call in calls {
            let Some(order) = orders.remove(&call.order) else {
                outcomes.push(Outcome::Now(Err(LomsError::OrderNotFound(call.order))));
                continue;
            };
            outcomes.push(match decide(&order, &call.command) {
                Ok(Some(plan)) if plan.new_lines.is_some() => {
                    return Err(LomsError::Internal("a change of lines in a command batch".into()));
                }
                Ok(Some(plan)) => {
                    planned.push((order, plan, call.traceparent.as_deref()));
                    Outcome::Planned(planned.len() - 1)
                }
                Ok(None) => Outcome::Now(Ok(())),
                Err(refusal) => Outcome::Now(Err(refusal)),
            });
        }
        Ok(Self { outcomes, planned })
    }

    /// Whether nothing is to be written (only refusals and steps already done).
    pub(super) fn writes_nothing(&self) -> bool {
        self.planned.is_empty()
    }

    /// The plans to settle and write, with their orders and traces.
    pub(super) fn plans(&self) -> Vec<Traced<'_>> {
        self.planned.iter().map(|(order, plan, trace)| (order, plan, *trace)).collect()
    }

    /// The skus whose stock the plans may change (what the Stocks cache forgets after the commit).
    pub(super) fn skus(&self) -> Vec<Sku> {
        self.planned.iter().flat_map(|(order, ..)| order.lines.iter().map(|(sku, _)| sku)).collect()
    }

    /// Every call's answer, once the plans are committed.
    pub(super) fn answers(self) -> Vec<CommandAnswer> {
        let mut replies: Vec<Option<CommandAnswer>> =
            self.planned.into_iter().map(|(_, plan, _)| Some(plan.reply)).collect();
        self.outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Now(answer) => answer,
                Outcome::Planned(position) => replies[position].take().expect("each plan answers one call"),
            })
            .collect()
    }
}
