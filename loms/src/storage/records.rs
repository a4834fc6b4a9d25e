//! The history rows and outbox events of a transaction's steps, as columns: the one path by which both backends
//! record what happened to orders (PostgreSQL binds the columns as arrays, SQLite as a JSON array of rows).

use chrono::{DateTime, Utc};

use crate::{
    domain::{CreateOrder, OrderId, OrderLines, OrderState, OrderStatus, Plan, Step, UserId},
    events,
};

/// A plan decided for an order, with the trace context of the request (or job) that asked for it, which the plan's
/// events carry: a batch's committer writes calls made in other tasks, so the current span is not theirs.
pub(super) type Traced<'a> = (&'a OrderState, &'a Plan, Option<&'a str>);

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

    /// The rows of decided plans, each with the trace context it came with.
    pub(super) fn of_plans(batch: &[Traced<'_>], at: DateTime<Utc>) -> Self {
        let mut rows = Self::new(at);
        for (order, plan, traceparent) in batch {
            let first = rows.traceparents.len();
            rows.push(order.id, order.user, plan.lines(order), &plan.steps);
            rows.traceparents[first..].fill(traceparent.map(str::to_owned));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, Count, RefundState, Sku, decide};

    fn awaiting(id: i64) -> OrderState {
        OrderState {
            id: OrderId::try_from(id).unwrap(),
            user: UserId::try_from(1).unwrap(),
            status: OrderStatus::AwaitingPayment,
            lines: OrderLines::new([(Sku::try_from(1u32).unwrap(), Count::try_from(1u32).unwrap())]).unwrap(),
            overdue: false,
            refund: RefundState::None,
        }
    }

    #[test]
    fn the_events_of_each_plan_carry_the_trace_it_came_with() {
        let (paid, cancelled) = (awaiting(1), awaiting(2));
        let pay = decide(&paid, &Command::Pay).unwrap().unwrap();
        let cancel = decide(&cancelled, &Command::Cancel).unwrap().unwrap();
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let rows = EventRows::of_plans(&[(&paid, &pay, Some(trace)), (&cancelled, &cancel, None)], Utc::now());
        assert_eq!(rows.order_ids, [1, 2]);
        assert_eq!(rows.traceparents, [Some(trace.to_owned()), None]);
        assert_eq!(rows.to, [OrderStatus::Payed.code(), OrderStatus::Cancelled.code()]);
    }
}
