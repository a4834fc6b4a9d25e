//! What paying or cancelling an existing order does: the decision every backend takes under the order's row lock,
//! so that exactly one of payment, cancellation and the unpaid timeout wins.

use super::{
    error::LomsError,
    ids::OrderId,
    order::{Decision, OrderStatus, Transition, TransitionReason},
};

/// The transition of an order the unpaid-order timeout cancels.
pub fn unpaid_timeout() -> Transition {
    Transition::new(Some(OrderStatus::AwaitingPayment), OrderStatus::Cancelled, TransitionReason::UnpaidTimeout)
        .with_detail("not paid before the payment deadline")
}

/// What a caller asks of an existing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// OrderPayed.
    Pay,
    /// CancelOrder.
    Cancel,
}

/// A change to make to an order, and what to answer once it is committed.
#[derive(Debug)]
pub struct Plan {
    pub transition: Transition,
    /// The caller's answer: an error here is still committed (a late payment cancels the order, then says so).
    pub reply: Result<(), LomsError>,
}

/// Decides what `action` does to an order in `status` whose payment deadline has (`overdue`) or has not passed.
/// `Ok(None)`: nothing to change, succeed (a retried payment or cancel). Every backend runs this under the order's
/// row lock, so exactly one of payment, cancellation and timeout wins.
pub fn plan(order_id: OrderId, status: OrderStatus, action: Action, overdue: bool) -> Result<Option<Plan>, LomsError> {
    let decision = match action {
        Action::Pay => status.pay(),
        Action::Cancel => status.cancel(TransitionReason::UserCancel),
    };
    match decision {
        Decision::AlreadyDone => Ok(None),
        Decision::Refuse { status, action } => Err(LomsError::IllegalTransition { order_id, status, action }),
        // A payment after the deadline loses to the timeout whether or not the sweep has run yet: the outcome must
        // not depend on the sweep's schedule.
        Decision::Apply(_) if action == Action::Pay && overdue => {
            Ok(Some(Plan { transition: unpaid_timeout(), reply: Err(LomsError::PaymentDeadlinePassed(order_id)) }))
        }
        Decision::Apply(transition) => Ok(Some(Plan { transition, reply: Ok(()) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_after_the_deadline_becomes_a_timeout_cancellation() {
        let id = OrderId::try_from(1).unwrap();
        let plan = plan(id, OrderStatus::AwaitingPayment, Action::Pay, true).unwrap().unwrap();
        assert_eq!(plan.transition.reason, TransitionReason::UnpaidTimeout);
        assert!(matches!(plan.reply, Err(LomsError::PaymentDeadlinePassed(_))));
        let on_time = super::plan(id, OrderStatus::AwaitingPayment, Action::Pay, false).unwrap().unwrap();
        assert_eq!(on_time.transition.to, OrderStatus::Payed);
        assert!(on_time.reply.is_ok());
    }

    #[test]
    fn a_user_may_cancel_even_after_the_deadline() {
        let id = OrderId::try_from(1).unwrap();
        let plan = plan(id, OrderStatus::AwaitingPayment, Action::Cancel, true).unwrap().unwrap();
        assert_eq!(plan.transition.reason, TransitionReason::UserCancel);
    }
}
