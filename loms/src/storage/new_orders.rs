//! A batch of CreateOrder calls, sorted and answered the same way on both backends (docs/architecture.md, "Group
//! commit"): each call replays a key already stored, repeats a key an earlier call of the batch used, or places a
//! new order. The new orders are placed in turn over one [`Ledger`], so a later call sees the earlier calls'
//! reservations, and the answers are those of running the calls one by one in the batch's order. One call cannot
//! fail its neighbours: a short stock is a failed order like any other, and a repeated key is answered before
//! anything is written. The backends only read (the stored keys, the stock rows, new order ids) and write.

use std::collections::{BTreeSet, HashMap};

use super::batch::{CreateAnswer, first_with_same_key};
use crate::domain::{CreateOrder, Ledger, LomsError, OrderId, OrderStatus, Placement, Sku, UserId, place};

/// The order a (user, key) names, as a replay needs it.
#[derive(Debug, Clone)]
pub(super) struct StoredKey {
    pub(super) order_id: OrderId,
    pub(super) status: OrderStatus,
    pub(super) request_hash: Option<String>,
    pub(super) last_detail: String,
}

/// The stored orders of (user, key) pairs.
pub(super) type StoredKeys = HashMap<(UserId, String), StoredKey>;

/// How one call of a batch is answered.
enum Outcome {
    /// Its key was already stored: a replay of the stored order.
    Stored(StoredKey),
    /// It repeats the key of the batch's call at this index: a replay of that call's order.
    Repeats(usize),
    /// A new order, placed at this position of the batch's placements.
    New(usize),
}

/// A batch of CreateOrder calls on its way from the queue to its answers.
pub(super) struct NewOrders<'a> {
    calls: &'a [CreateOrder],
    repeats: Vec<Option<usize>>,
    outcomes: Vec<Outcome>,
    /// The indexes of the calls that place new orders, in the batch's order.
    new: Vec<usize>,
    /// Each new order's call index, id and placement, once placed.
    placements: Vec<(usize, OrderId, Placement)>,
}

impl<'a> NewOrders<'a> {
    /// The batch `calls`, its repeated keys found.
    pub(super) fn new(calls: &'a [CreateOrder]) -> Self {
        Self {
            repeats: first_with_same_key(calls),
            calls,
            outcomes: Vec::new(),
            new: Vec::new(),
            placements: Vec::new(),
        }
    }

    /// The (user, key) pairs whose stored orders [`Self::sort`] needs: every key's first use in the batch.
    pub(super) fn keys_to_look_up(&self) -> Vec<(i64, &'a str)> {
        self.calls
            .iter()
            .zip(&self.repeats)
            .filter(|(_, repeat)| repeat.is_none())
            .filter_map(|(call, _)| Some((call.user.get(), call.idempotency.as_ref()?.key.as_str())))
            .collect()
    }

    /// Decides each call's outcome, given the stored orders of [`Self::keys_to_look_up`]; returns how many new
    /// orders the batch places (how many ids it needs).
    pub(super) fn sort(&mut self, mut stored: StoredKeys) -> usize {
        for (index, call) in self.calls.iter().enumerate() {
            let outcome = match (self.repeats[index], &call.idempotency) {
                (Some(first), _) => Outcome::Repeats(first),
                (None, Some(idempotency)) => match stored.remove(&(call.user, idempotency.key.clone())) {
                    Some(order) => Outcome::Stored(order),
                    None => self.new_order(index),
                },
                (None, None) => self.new_order(index),
            };
            self.outcomes.push(outcome);
        }
        self.new.len()
    }

    fn new_order(&mut self, index: usize) -> Outcome {
        self.new.push(index);
        Outcome::New(self.new.len() - 1)
    }

    /// How many calls the batch has.
    pub(super) fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The skus of the new orders, each once, in the global lock order (what the batch locks, and what the Stocks
    /// cache forgets after the commit).
    pub(super) fn skus(&self) -> BTreeSet<Sku> {
        self.new.iter().flat_map(|&index| self.calls[index].lines.iter().map(|(sku, _)| sku)).collect()
    }

    /// Places the new orders, in the batch's order, under the ids `ids` (one per new order) on `ledger`.
    pub(super) fn place(&mut self, ids: Vec<OrderId>, ledger: &mut Ledger) {
        for (&index, order_id) in self.new.iter().zip(ids) {
            self.placements.push((index, order_id, place(order_id, &self.calls[index], ledger)));
        }
    }

    /// The placed new orders, each with its call, for the backend to write.
    pub(super) fn placed(&self) -> impl Iterator<Item = (&'a CreateOrder, OrderId, &Placement)> + '_ {
        self.placements.iter().map(|(index, order_id, placement)| (&self.calls[*index], *order_id, placement))
    }

    /// Every call's answer, once the batch committed. A repeated key, whether stored before or used earlier in the
    /// batch, is answered by [`crate::domain::IdempotencyKey::replay`] of the order it names, exactly as a later
    /// call would be.
    pub(super) fn answers(self) -> Vec<CreateAnswer> {
        let calls = self.calls;
        let mut origins: Vec<Option<StoredKey>> = vec![None; calls.len()];
        let mut replies: Vec<Option<CreateAnswer>> = Vec::with_capacity(self.placements.len());
        for (index, order_id, placement) in self.placements {
            origins[index] = Some(StoredKey {
                order_id,
                status: placement.status,
                request_hash: calls[index].idempotency.as_ref().map(|key| key.request_hash.clone()),
                last_detail: placement.steps.last().map(|step| step.transition.detail.clone()).unwrap_or_default(),
            });
            replies.push(Some(placement.reply));
        }
        self.outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                let origin = match outcome {
                    Outcome::New(position) => {
                        return replies[position].take().expect("each placement answers one call");
                    }
                    Outcome::Stored(stored) => stored,
                    Outcome::Repeats(first) => match &origins[first] {
                        Some(origin) => origin.clone(),
                        None => return Err(LomsError::Internal("a repeated key's first use has no order".into())),
                    },
                };
                let idempotency = calls[index].idempotency.as_ref().expect("only a keyed call replays");
                origins[index] = Some(origin.clone());
                idempotency.replay(origin.request_hash.as_deref(), origin.order_id, origin.status, origin.last_detail)
            })
            .collect()
    }
}
