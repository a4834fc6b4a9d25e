//! What CreateOrder does with a new order, decided over the stock rows the backend locked: reserve every unit
//! (awaiting payment) or keep the order as failed, naming the short sku.

use std::time::Duration;

use super::{
    allocation::Reservation,
    error::LomsError,
    ids::OrderId,
    order::{OrderStatus, Step, Transition, TransitionReason},
    stock::Ledger,
    storage::{CreateOrder, CreateOutcome},
};

/// How a new order ends its CreateOrder, and what to answer once it is committed.
#[derive(Debug)]
pub struct Placement {
    /// `awaiting payment` or `failed`.
    pub status: OrderStatus,
    /// Units held per (sku, warehouse); none for a failed order. The ledger holds the matching stock deltas.
    pub reservations: Vec<Reservation>,
    /// How long the order may stay unpaid; `None` for a failed order (it has no deadline).
    pub payment_timeout: Option<Duration>,
    /// created → new, then new → awaiting payment or new → failed.
    pub steps: Vec<Step>,
    /// A failed order is still committed, then reported as [`LomsError::InsufficientStock`].
    pub reply: Result<CreateOutcome, LomsError>,
}

/// Places the new order `order_id` on the locked stock of `ledger` (which takes the reservation's deltas).
pub fn place(order_id: OrderId, request: &CreateOrder, ledger: &mut Ledger) -> Placement {
    let created = Transition::new(None, OrderStatus::New, TransitionReason::Created).into();
    match ledger.reserve(request.lines.iter()) {
        Ok(reservations) => Placement {
            status: OrderStatus::AwaitingPayment,
            reservations,
            payment_timeout: Some(request.payment_timeout),
            steps: vec![
                created,
                Transition::new(Some(OrderStatus::New), OrderStatus::AwaitingPayment, TransitionReason::Reserved)
                    .into(),
            ],
            reply: Ok(CreateOutcome { order_id, replayed: false }),
        },
        Err(shortage) => Placement {
            status: OrderStatus::Failed,
            reservations: Vec::new(),
            payment_timeout: None,
            steps: vec![
                created,
                Transition::new(Some(OrderStatus::New), OrderStatus::Failed, TransitionReason::InsufficientStock)
                    .with_detail(shortage.to_string())
                    .into(),
            ],
            reply: Err(LomsError::InsufficientStock { order_id, detail: shortage.to_string() }),
        },
    }
}
