//! The history rows and outbox events of a transaction's steps, as columns: the one path by which both backends
//! record what happened to orders (PostgreSQL binds the columns as arrays, SQLite as a JSON array of rows).

use chrono::{DateTime, Utc};

use crate::{
    domain::{CreateOrder, OrderId, OrderLines, OrderStatus, Step, UserId},
    events,
};

/// Steps of one or more orders as the columns of their history rows and outbox events, all stamped `at`.
#[derive(Debug)]
pub(super) struct EventRows {
    pub(super) order_ids: Vec<i64>,
    pub(super) from: Vec<Option<i16>>,
    pub(super) to: Vec<i16>,
    pub(super) reasons: Vec<i16>,
    pub(super) details: Vec<String>,
    pub(super) event_ids: Vec<uuid::Uuid>,
    pub(super) payloads: Vec<String>,
    /// W3C trace context of the request that made each event, for the relay's Kafka headers.
    pub(super) traceparents: Vec<Option<String>>,
    pub(super) at: DateTime<Utc>,
}

impl EventRows {
    /// No rows yet.
    pub(super) fn new(at: DateTime<Utc>) -> Self {
        Self {
            order_ids: Vec::new(),
            from: Vec::new(),
            to: Vec::new(),
            reasons: Vec::new(),
            details: Vec::new(),
            event_ids: Vec::new(),
            payloads: Vec::new(),
            traceparents: Vec::new(),
            at,
        }
    }

    /// The rows of each order's steps; the events carry `lines`, the order's items after the steps.
    pub(super) fn of<'a>(
        batch: impl IntoIterator<Item = (OrderId, UserId, &'a OrderLines, &'a [Step])>,
        at: DateTime<Utc>,
    ) -> Self {
        let mut rows = Self::new(at);
        for (order_id, user, lines, steps) in batch {
            rows.push(order_id, user, lines, steps);
        }
        rows
    }

    /// The rows of new orders, each with its request's trace context (captured where the request was made, which
    /// may be another task than the one writing: a batch's committer).
    pub(super) fn of_requests<'a>(
        batch: impl IntoIterator<Item = (OrderId, &'a CreateOrder, &'a [Step])>,
        at: DateTime<Utc>,
    ) -> Self {
        let mut rows = Self::new(at);
        for (order_id, request, steps) in batch {
            let first = rows.traceparents.len();
            rows.push(order_id, request.user, &request.lines, steps);
            rows.traceparents[first..].fill(request.traceparent.clone());
        }
        rows
    }

    /// Appends one order's steps.
    pub(super) fn push(&mut self, order_id: OrderId, user: UserId, lines: &OrderLines, steps: &[Step]) {
        for step in steps {
            let transition = &step.transition;
            let event = events::order_status_changed(order_id, user, lines, step, self.at);
            self.order_ids.push(order_id.get());
            self.from.push(transition.from.map(OrderStatus::code));
            self.to.push(transition.to.code());
            self.reasons.push(transition.reason.code());
            self.details.push(transition.detail.clone());
            self.event_ids.push(event.event_id);
            self.payloads.push(event.payload);
            self.traceparents.push(event.traceparent);
        }
    }
}
