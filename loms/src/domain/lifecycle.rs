//! What a command does to an existing order: the one decision every backend takes under the order's row lock, so
//! that exactly one of any two racing commands (and the unpaid timeout) wins. A backend loads the order
//! ([`OrderState`]), calls [`decide`], and writes the [`Plan`]: the new status, the history rows and events, and
//! how the order's hold on stock ends (a [`Settlement`] the backend applies to the rows it locks, through a
//! [`super::Ledger`]). `decide` looks at one order and is called once per order, so a batch of orders (the
//! sweep) is a loop of it.

use super::{
    error::LomsError,
    ids::{OrderId, UserId},
    order::{Decision, OrderLines, OrderStatus, Step, Transition, TransitionReason},
    stock::Settlement,
};

/// The transition of an order the unpaid-order timeout cancels.
pub fn unpaid_timeout() -> Transition {
    Transition::new(Some(OrderStatus::AwaitingPayment), OrderStatus::Cancelled, TransitionReason::UnpaidTimeout)
        .with_detail("not paid before the payment deadline")
}

/// An existing order as a backend loaded it, under its row lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub id: OrderId,
    pub user: UserId,
    pub status: OrderStatus,
    pub lines: OrderLines,
    /// Whether the payment deadline has passed (by the clock that stored it).
    pub overdue: bool,
}

/// What a caller (or LOMS itself) asks of an existing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// OrderPayed.
    Pay,
    /// CancelOrder.
    Cancel,
    /// The unpaid-order sweep found the order past its payment deadline.
    Timeout,
}

/// A change to make to an order, and what to answer once it is committed.
#[derive(Debug)]
pub struct Plan {
    /// The order's status after the change.
    pub status: OrderStatus,
    /// The history rows and events, in order.
    pub steps: Vec<Step>,
    /// How the order's stored reservations change the stock, if at all.
    pub settlement: Option<Settlement>,
    /// The caller's answer: an error here is still committed (a late payment cancels the order, then says so).
    pub reply: Result<(), LomsError>,
}

impl Plan {
    fn new(transition: Transition, settlement: Option<Settlement>) -> Self {
        Self { status: transition.to, steps: vec![transition.into()], settlement, reply: Ok(()) }
    }
}

/// Decides what `command` does to `order`. `Ok(None)`: nothing to change, succeed (a retried step, or a timeout
/// for an order that is no longer due). `Err`: refused, nothing written.
pub fn decide(order: &OrderState, command: &Command) -> Result<Option<Plan>, LomsError> {
    let refuse = |action| LomsError::IllegalTransition { order_id: order.id, status: order.status, action };
    let decision = match command {
        Command::Pay => order.status.pay(),
        Command::Cancel => order.status.cancel(TransitionReason::UserCancel),
        Command::Timeout => {
            return Ok((order.status == OrderStatus::AwaitingPayment && order.overdue)
                .then(|| Plan::new(unpaid_timeout(), Some(Settlement::Release))));
        }
    };
    match decision {
        Decision::AlreadyDone => Ok(None),
        Decision::Refuse { action, .. } => Err(refuse(action)),
        // A payment after the deadline loses to the timeout whether or not the sweep has run yet: the outcome must
        // not depend on the sweep's schedule.
        Decision::Apply(_) if *command == Command::Pay && order.overdue => Ok(Some(Plan {
            reply: Err(LomsError::PaymentDeadlinePassed(order.id)),
            ..Plan::new(unpaid_timeout(), Some(Settlement::Release))
        })),
        Decision::Apply(transition) => {
            let settlement = if transition.to == OrderStatus::Payed { Settlement::Sell } else { Settlement::Release };
            Ok(Some(Plan::new(transition, Some(settlement))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Count, Sku};

    fn order(status: OrderStatus, overdue: bool) -> OrderState {
        OrderState {
            id: OrderId::try_from(1).unwrap(),
            user: UserId::try_from(1).unwrap(),
            status,
            lines: OrderLines::new([(Sku::try_from(1u32).unwrap(), Count::try_from(1u32).unwrap())]).unwrap(),
            overdue,
        }
    }

    #[test]
    fn a_payment_after_the_deadline_becomes_a_timeout_cancellation() {
        let plan = decide(&order(OrderStatus::AwaitingPayment, true), &Command::Pay).unwrap().unwrap();
        assert_eq!(plan.steps[0].transition.reason, TransitionReason::UnpaidTimeout);
        assert_eq!(plan.settlement, Some(Settlement::Release));
        assert!(matches!(plan.reply, Err(LomsError::PaymentDeadlinePassed(_))));
        let on_time = decide(&order(OrderStatus::AwaitingPayment, false), &Command::Pay).unwrap().unwrap();
        assert_eq!(on_time.status, OrderStatus::Payed);
        assert_eq!(on_time.settlement, Some(Settlement::Sell));
        assert!(on_time.reply.is_ok());
    }

    #[test]
    fn a_user_may_cancel_even_after_the_deadline() {
        let plan = decide(&order(OrderStatus::AwaitingPayment, true), &Command::Cancel).unwrap().unwrap();
        assert_eq!(plan.steps[0].transition.reason, TransitionReason::UserCancel);
    }

    #[test]
    fn the_timeout_touches_only_orders_still_due() {
        assert!(decide(&order(OrderStatus::AwaitingPayment, true), &Command::Timeout).unwrap().is_some());
        assert!(decide(&order(OrderStatus::AwaitingPayment, false), &Command::Timeout).unwrap().is_none());
        assert!(decide(&order(OrderStatus::Payed, true), &Command::Timeout).unwrap().is_none());
    }
}
