//! What a notification says and who is told: one wording per transition for the customer, and the store's staff
//! (pickers, the shop) told about what changes their work — new orders, changes, and cancellations of orders the
//! courier does not have yet (as in a marketplace's order hooks, where `order.created`, `order.changed` and
//! `order.cancelled` before hand-over reach the pickers and the store).

use std::fmt::Write as _;

use minizon_proto::{
    events::OrderStatusChanged,
    loms::{Item, OrderStatus, TransitionReason},
};
use serde::Serialize;

/// Who a notification is for; each audience has its own channels (sinks) and wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// The person who placed the order.
    Customer,
    /// The store's staff: pickers and the shop.
    Staff,
}

impl Audience {
    /// `customer` or `staff`, as in the webhook body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Staff => "staff",
        }
    }
}

/// Who is told about `event`: the customer always, the staff when their work changes.
pub fn audiences(event: &OrderStatusChanged) -> &'static [Audience] {
    if concerns_staff(event) { &[Audience::Customer, Audience::Staff] } else { &[Audience::Customer] }
}

/// Whether the staff are told: a new (reserved) order to pick, a change of its lines, or a cancellation while the
/// goods are still in the warehouse (cancelled by the customer, by the payment timeout, or refunded before
/// shipping). A refund of a shipped order is not: the goods are with the courier, and the warehouse hears of them
/// when it confirms the return.
pub fn concerns_staff(event: &OrderStatusChanged) -> bool {
    let (Ok(status), Ok(reason)) = (OrderStatus::try_from(event.new_status), TransitionReason::try_from(event.reason))
    else {
        return false;
    };
    match (status, reason) {
        (OrderStatus::AwaitingPayment, TransitionReason::Reserved | TransitionReason::Changed) => true,
        (OrderStatus::Cancelled, TransitionReason::UserCancel | TransitionReason::UnpaidTimeout) => true,
        (OrderStatus::Cancelled, TransitionReason::Refund) => {
            !event.return_requested && !matches!(old_status(event), Some(OrderStatus::Shipped | OrderStatus::Delivered))
        }
        _ => false,
    }
}

fn old_status(event: &OrderStatusChanged) -> Option<OrderStatus> {
    event.old_status.and_then(|status| OrderStatus::try_from(status).ok())
}

/// The message `audience` receives for an event.
pub fn render(event: &OrderStatusChanged, audience: Audience) -> String {
    let mut text = match audience {
        Audience::Customer => for_customer(event),
        Audience::Staff => for_staff(event),
    };
    if !event.detail.is_empty() {
        let _ = write!(text, " ({})", event.detail);
    }
    text
}

fn for_customer(event: &OrderStatusChanged) -> String {
    let order = event.order_id;
    let status = OrderStatus::try_from(event.new_status).ok();
    let reason = TransitionReason::try_from(event.reason).ok();
    match status {
        Some(OrderStatus::New) => format!("Order #{order} was created: {}.", items(&event.items)),
        Some(OrderStatus::AwaitingPayment) if reason == Some(TransitionReason::Changed) => format!(
            "Order #{order} was changed and now holds {} (before: {}). It still awaits payment.",
            items(&event.items),
            items(&event.previous_items)
        ),
        Some(OrderStatus::AwaitingPayment) => {
            format!("Order #{order} is reserved and awaits payment: {}.", items(&event.items))
        }
        Some(OrderStatus::Failed) => match reason {
            Some(TransitionReason::InsufficientStock) => {
                format!("Order #{order} could not be placed: there is not enough stock.")
            }
            _ => format!("Order #{order} could not be placed."),
        },
        Some(OrderStatus::Payed) => format!("Order #{order} is paid. Thank you!"),
        Some(OrderStatus::Shipped) => format!("Order #{order} was handed to the courier and is on its way."),
        Some(OrderStatus::Delivered) => format!("Order #{order} was delivered. Enjoy!"),
        Some(OrderStatus::Cancelled) => match reason {
            Some(TransitionReason::UnpaidTimeout) => {
                format!("Order #{order} was cancelled because it was not paid in time; its items are released.")
            }
            Some(TransitionReason::UserCancel) => format!("Order #{order} was cancelled at your request."),
            Some(TransitionReason::Refund) if event.return_requested => format!(
                "Order #{order} was cancelled and will be refunded; the courier brings the goods back to our \
                 warehouse."
            ),
            Some(TransitionReason::Refund) => {
                format!("Order #{order} was cancelled and will be refunded; nothing was shipped.")
            }
            Some(TransitionReason::ReturnReceived) => {
                format!("The goods of order #{order} are back in our warehouse: the return is complete.")
            }
            _ => format!("Order #{order} was cancelled."),
        },
        // A status added to the contract after this worker was built: say what is known rather than nothing.
        None => format!("Order #{order} changed to status {}.", event.new_status),
    }
}

fn for_staff(event: &OrderStatusChanged) -> String {
    let order = event.order_id;
    let reason = TransitionReason::try_from(event.reason).ok();
    match reason {
        Some(TransitionReason::Reserved) => format!("New order #{order} to pick: {}.", items(&event.items)),
        Some(TransitionReason::Changed) => {
            format!("Order #{order} changed: pick {} instead of {}.", items(&event.items), items(&event.previous_items))
        }
        Some(TransitionReason::UserCancel) => {
            format!("Order #{order} was cancelled by the customer: do not pick it ({}).", items(&event.items))
        }
        Some(TransitionReason::UnpaidTimeout) => {
            format!("Order #{order} was cancelled (not paid in time): do not pick it ({}).", items(&event.items))
        }
        Some(TransitionReason::Refund) => {
            format!("Order #{order} was refunded before shipping: do not ship it ({}).", items(&event.items))
        }
        // Only the events above are routed to the staff; a rendering for anything else still says what happened.
        _ => for_customer(event),
    }
}

/// `2 × sku 1001, 1 × sku 1002`.
fn items(items: &[Item]) -> String {
    if items.is_empty() {
        return "no items".to_owned();
    }
    let mut text = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{} × sku {}", item.count, item.sku);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(old: Option<OrderStatus>, new_status: OrderStatus, reason: TransitionReason) -> OrderStatusChanged {
        OrderStatusChanged {
            order_id: 42,
            old_status: old.map(Into::into),
            new_status: new_status.into(),
            reason: reason.into(),
            items: vec![Item { sku: 1001, count: 2 }, Item { sku: 1002, count: 1 }],
            ..OrderStatusChanged::default()
        }
    }

    fn customer(event: &OrderStatusChanged) -> String {
        render(event, Audience::Customer)
    }

    fn reserved() -> OrderStatusChanged {
        event(Some(OrderStatus::New), OrderStatus::AwaitingPayment, TransitionReason::Reserved)
    }

    fn changed() -> OrderStatusChanged {
        let mut changed =
            event(Some(OrderStatus::AwaitingPayment), OrderStatus::AwaitingPayment, TransitionReason::Changed);
        changed.previous_items = vec![Item { sku: 1001, count: 5 }];
        changed
    }

    fn refund(from: OrderStatus, return_requested: bool) -> OrderStatusChanged {
        let mut refund = event(Some(from), OrderStatus::Cancelled, TransitionReason::Refund);
        refund.return_requested = return_requested;
        refund.detail = "customer changed their mind".into();
        refund
    }

    #[test]
    fn a_reserved_order_lists_its_items() {
        assert_eq!(customer(&reserved()), "Order #42 is reserved and awaits payment: 2 × sku 1001, 1 × sku 1002.");
    }

    #[test]
    fn a_timeout_cancellation_says_why() {
        let text = customer(&event(None, OrderStatus::Cancelled, TransitionReason::UnpaidTimeout));
        assert!(text.contains("not paid in time"), "{text}");
    }

    #[test]
    fn a_user_cancellation_is_not_called_a_timeout() {
        let text = customer(&event(None, OrderStatus::Cancelled, TransitionReason::UserCancel));
        assert_eq!(text, "Order #42 was cancelled at your request.");
    }

    #[test]
    fn a_failed_order_carries_the_detail() {
        let mut failed = event(Some(OrderStatus::New), OrderStatus::Failed, TransitionReason::InsufficientStock);
        failed.detail = "sku 1001 is short".into();
        assert_eq!(customer(&failed), "Order #42 could not be placed: there is not enough stock. (sku 1001 is short)");
    }

    #[test]
    fn shipping_and_delivery_are_told_in_words() {
        let shipped = event(Some(OrderStatus::Payed), OrderStatus::Shipped, TransitionReason::Shipped);
        let delivered = event(Some(OrderStatus::Shipped), OrderStatus::Delivered, TransitionReason::Delivered);
        assert_eq!(customer(&shipped), "Order #42 was handed to the courier and is on its way.");
        assert_eq!(customer(&delivered), "Order #42 was delivered. Enjoy!");
    }

    #[test]
    fn a_change_lists_the_new_lines_and_the_old_ones() {
        assert_eq!(
            customer(&changed()),
            "Order #42 was changed and now holds 2 × sku 1001, 1 × sku 1002 (before: 5 × sku 1001). It still awaits \
             payment."
        );
        assert_eq!(
            render(&changed(), Audience::Staff),
            "Order #42 changed: pick 2 × sku 1001, 1 × sku 1002 instead of 5 × sku 1001."
        );
    }

    #[test]
    fn a_refund_says_whether_the_goods_come_back_and_carries_the_callers_reason() {
        let before_shipping = customer(&refund(OrderStatus::Payed, false));
        let after_shipping = customer(&refund(OrderStatus::Shipped, true));
        assert_eq!(
            before_shipping,
            "Order #42 was cancelled and will be refunded; nothing was shipped. (customer changed their mind)"
        );
        assert!(after_shipping.contains("the courier brings the goods back"), "{after_shipping}");
        assert!(after_shipping.ends_with("(customer changed their mind)"), "{after_shipping}");
    }

    #[test]
    fn a_received_return_says_the_return_is_complete() {
        let received = event(Some(OrderStatus::Cancelled), OrderStatus::Cancelled, TransitionReason::ReturnReceived);
        assert_eq!(customer(&received), "The goods of order #42 are back in our warehouse: the return is complete.");
    }

    #[test]
    fn the_staff_hear_of_new_orders_changes_and_cancellations_before_hand_over() {
        let told = [
            reserved(),
            changed(),
            event(Some(OrderStatus::AwaitingPayment), OrderStatus::Cancelled, TransitionReason::UserCancel),
            event(Some(OrderStatus::AwaitingPayment), OrderStatus::Cancelled, TransitionReason::UnpaidTimeout),
            refund(OrderStatus::Payed, false),
        ];
        for event in &told {
            assert_eq!(audiences(event), [Audience::Customer, Audience::Staff], "{event:?}");
        }
        assert_eq!(render(&reserved(), Audience::Staff), "New order #42 to pick: 2 × sku 1001, 1 × sku 1002.");
        let refunded = render(&refund(OrderStatus::Payed, false), Audience::Staff);
        assert!(refunded.starts_with("Order #42 was refunded before shipping: do not ship it"), "{refunded}");
    }

    #[test]
    fn the_staff_do_not_hear_of_payments_deliveries_or_what_the_courier_already_has() {
        let not_told = [
            event(None, OrderStatus::New, TransitionReason::Created),
            event(Some(OrderStatus::New), OrderStatus::Failed, TransitionReason::InsufficientStock),
            event(Some(OrderStatus::AwaitingPayment), OrderStatus::Payed, TransitionReason::Payment),
            event(Some(OrderStatus::Payed), OrderStatus::Shipped, TransitionReason::Shipped),
            event(Some(OrderStatus::Shipped), OrderStatus::Delivered, TransitionReason::Delivered),
            refund(OrderStatus::Shipped, true),
            event(Some(OrderStatus::Cancelled), OrderStatus::Cancelled, TransitionReason::ReturnReceived),
        ];
        for event in &not_told {
            assert_eq!(audiences(event), [Audience::Customer], "{event:?}");
        }
    }

    #[test]
    fn an_unknown_status_still_says_something() {
        let mut future = reserved();
        future.new_status = 99;
        assert_eq!(customer(&future), "Order #42 changed to status 99.");
        assert_eq!(audiences(&future), [Audience::Customer]);
    }
}
