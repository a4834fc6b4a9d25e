//! What a command does to an existing order: the one decision every backend takes under the order's row lock, so
//! that exactly one of any two racing commands (and the unpaid timeout) wins. A backend loads the order
//! ([`OrderState`]), calls [`decide`], and writes the [`Plan`]: the new status, the history rows and events, and
//! how the order's hold on stock ends (a [`Settlement`] the backend applies to the rows it locks, through a
//! [`super::Ledger`]). `decide` looks at one order and is called once per order, so a batch of orders (the
//! sweep) is a loop of it.

use super::{
    allocation::Reservation,
    error::LomsError,
    ids::{InvalidInput, OrderId, UserId},
    order::{Decision, OrderLines, OrderStatus, Step, Transition, TransitionReason},
    stock::{Ledger, Settlement},
};

/// Where a cancelled order's refund stands. The numbers are the stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefundState {
    /// Not refunded (never paid, or not cancelled).
    #[default]
    None = 0,
    /// Refunded while payed: its units went back on hand at once.
    Refunded = 1,
    /// Refunded while shipped: the goods must come back from delivery.
    ReturnRequested = 2,
    /// The warehouse received the goods back and they are on hand again.
    ReturnReceived = 3,
}

impl RefundState {
    /// The stored number.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The state stored as `code`.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            0 => Self::None,
            1 => Self::Refunded,
            2 => Self::ReturnRequested,
            3 => Self::ReturnReceived,
            _ => return None,
        })
    }
}

/// Why a paid order is refunded, as the caller wrote it: bounded, so history rows and events stay small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReason(String);

impl RefundReason {
    /// Longest reason accepted, in characters.
    pub const MAX_CHARS: usize = 500;

    /// The reason's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RefundReason {
    type Error = InvalidInput;

    fn try_from(reason: String) -> Result<Self, Self::Error> {
        let chars = reason.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(InvalidInput(format!(
                "reason is {chars} characters long; at most {} are accepted",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(reason.trim().to_owned()))
    }
}

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
    /// Where its refund stands (cancelled orders only).
    pub refund: RefundState,
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
    /// ShipOrder: handed to delivery.
    Ship,
    /// DeliverOrder: the courier confirmed delivery.
    Deliver,
    /// RefundOrder: a paid order is cancelled with a refund.
    Refund(RefundReason),
    /// ChangeOrder: an unpaid order's lines are replaced.
    Change(OrderLines),
    /// LomsAdminV1.ReceiveReturn: a refunded shipped order's goods are back in the warehouse.
    ReceiveReturn,
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
    /// A change of lines: the new lines, reserved (all or nothing) after the old reservation is released.
    pub new_lines: Option<OrderLines>,
    /// Where the order's refund stands after the change.
    pub refund: RefundState,
    /// The caller's answer: an error here is still committed (a late payment cancels the order, then says so).
    pub reply: Result<(), LomsError>,
}

impl Plan {
    fn new(transition: Transition, settlement: Option<Settlement>) -> Self {
        Self {
            status: transition.to,
            steps: vec![transition.into()],
            settlement,
            new_lines: None,
            refund: RefundState::None,
            reply: Ok(()),
        }
    }

    /// The order's lines after the plan (the events carry them).
    pub fn lines<'a>(&'a self, order: &'a OrderState) -> &'a OrderLines {
        self.new_lines.as_ref().unwrap_or(&order.lines)
    }

    /// Applies the plan's stock change to `ledger` (which holds the rows of `held`, the order's stored
    /// reservations, and for a change of lines the rows of the new skus). For a change of lines returns the new
    /// reservations, or refuses it naming the short sku (nothing is to be written then).
    pub fn apply_stock(
        &self,
        order: &OrderState,
        held: &[Reservation],
        ledger: &mut Ledger,
    ) -> Result<Option<Vec<Reservation>>, LomsError> {
        if let Some(settlement) = self.settlement {
            ledger.settle(settlement, held)?;
        }
        let Some(lines) = &self.new_lines else {
            return Ok(None);
        };
        ledger
            .reserve(lines.iter())
            .map(Some)
            .map_err(|shortage| LomsError::ChangeShort { order_id: order.id, detail: shortage.to_string() })
    }
}

/// Decides what `command` does to `order`. `Ok(None)`: nothing to change, succeed (a retried step, or a timeout
/// for an order that is no longer due). `Err`: refused, nothing written.
pub fn decide(order: &OrderState, command: &Command) -> Result<Option<Plan>, LomsError> {
    let refuse = |action| Err(LomsError::IllegalTransition { order_id: order.id, status: order.status, action });
    let step = |to, reason| Transition::new(Some(order.status), to, reason);
    let late = || {
        // A payment or change after the deadline loses to the timeout whether or not the sweep has run yet: the
        // outcome must not depend on the sweep's schedule.
        Ok(Some(Plan {
            reply: Err(LomsError::PaymentDeadlinePassed(order.id)),
            ..Plan::new(unpaid_timeout(), Some(Settlement::Release))
        }))
    };
    use OrderStatus::*;
    match command {
        Command::Timeout => Ok((order.status == AwaitingPayment && order.overdue)
            .then(|| Plan::new(unpaid_timeout(), Some(Settlement::Release)))),
        Command::Pay => match order.status.pay() {
            Decision::AlreadyDone => Ok(None),
            Decision::Refuse { action, .. } => refuse(action),
            Decision::Apply(_) if order.overdue => late(),
            Decision::Apply(transition) => Ok(Some(Plan::new(transition, Some(Settlement::Sell)))),
        },
        Command::Cancel => match order.status.cancel(TransitionReason::UserCancel) {
            Decision::AlreadyDone => Ok(None),
            Decision::Refuse { .. } if matches!(order.status, Payed | Shipped) => {
                refuse("cancelled: it is paid, so cancel it with RefundOrder")
            }
            Decision::Refuse { action, .. } => refuse(action),
            Decision::Apply(transition) => Ok(Some(Plan::new(transition, Some(Settlement::Release)))),
        },
        Command::Ship => match order.status {
            Payed => Ok(Some(Plan::new(step(Shipped, TransitionReason::Shipped), None))),
            // Delivered implies shipped: the step happened.
            Shipped | Delivered => Ok(None),
            _ => refuse("shipped (only a payed order can be)"),
        },
        Command::Deliver => match order.status {
            Shipped => Ok(Some(Plan::new(step(Delivered, TransitionReason::Delivered), None))),
            Payed => {
                // The courier confirms an order never marked shipped: both steps are recorded.
                let shipped = step(Shipped, TransitionReason::Shipped).with_detail("recorded with its delivery");
                let delivered = Transition::new(Some(Shipped), Delivered, TransitionReason::Delivered);
                Ok(Some(Plan {
                    steps: vec![shipped.into(), delivered.into()],
                    ..Plan::new(step(Delivered, TransitionReason::Delivered), None)
                }))
            }
            Delivered => Ok(None),
            _ => refuse("delivered (only a payed or shipped order can be)"),
        },
        Command::Refund(reason) => {
            let refund = step(Cancelled, TransitionReason::Refund).with_detail(reason.as_str());
            match order.status {
                Payed => {
                    Ok(Some(Plan { refund: RefundState::Refunded, ..Plan::new(refund, Some(Settlement::Restock)) }))
                }
                Shipped => Ok(Some(Plan {
                    refund: RefundState::ReturnRequested,
                    steps: vec![Step { transition: refund.clone(), return_requested: true, previous_lines: None }],
                    ..Plan::new(refund, None)
                })),
                Cancelled if order.refund != RefundState::None => Ok(None),
                Delivered => refuse("refunded (returns after delivery are not supported yet)"),
                AwaitingPayment | New => refuse("refunded: it is not paid; cancel it with CancelOrder"),
                _ => refuse("refunded (only a payed or shipped order can be)"),
            }
        }
        Command::ReceiveReturn => match (order.status, order.refund) {
            (Cancelled, RefundState::ReturnRequested) => Ok(Some(Plan {
                refund: RefundState::ReturnReceived,
                ..Plan::new(step(Cancelled, TransitionReason::ReturnReceived), Some(Settlement::Restock))
            })),
            (Cancelled, RefundState::ReturnReceived) => Ok(None),
            _ => refuse("received back (only a refunded shipped order has a return to receive)"),
        },
        Command::Change(lines) => match order.status {
            AwaitingPayment if order.overdue => late(),
            AwaitingPayment if *lines == order.lines => Ok(None),
            AwaitingPayment => {
                let changed = Step {
                    transition: step(AwaitingPayment, TransitionReason::Changed),
                    return_requested: false,
                    previous_lines: Some(order.lines.clone()),
                };
                Ok(Some(Plan {
                    steps: vec![changed],
                    new_lines: Some(lines.clone()),
                    ..Plan::new(step(AwaitingPayment, TransitionReason::Changed), Some(Settlement::Release))
                }))
            }
            _ => refuse("changed (only an order awaiting payment can be)"),
        },
    }
    .map(|plan| {
        plan.map(|mut plan| {
            // A step that does not touch the refund keeps it as it was.
            if plan.refund == RefundState::None {
                plan.refund = order.refund;
            }
            plan
        })
    })
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
            refund: RefundState::None,
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
