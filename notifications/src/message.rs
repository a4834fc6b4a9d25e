//! The human-readable text of a notification, one wording per transition.

use std::fmt::Write as _;

use minizon_proto::{
    events::OrderStatusChanged,
    loms::{Item, OrderStatus, TransitionReason},
};

/// The message a person receives for an event.
pub fn render(event: &OrderStatusChanged) -> String {
    let order = event.order_id;
    let status = OrderStatus::try_from(event.new_status).ok();
    let reason = TransitionReason::try_from(event.reason).ok();
    let mut text = match status {
        Some(OrderStatus::New) => format!("Order #{order} was created: {}.", items(&event.items)),
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
        Some(OrderStatus::Cancelled) => match reason {
            Some(TransitionReason::UnpaidTimeout) => {
                format!("Order #{order} was cancelled because it was not paid in time; its items are released.")
            }
            Some(TransitionReason::UserCancel) => format!("Order #{order} was cancelled at your request."),
            _ => format!("Order #{order} was cancelled."),
        },
        // CONTRACT PLACEHOLDER: the after-payment messages come with the lifecycle work (issue 10).
        Some(status @ (OrderStatus::Shipped | OrderStatus::Delivered)) => {
            format!("Order #{order} is {}.", status.as_str_name())
        }
        // A status added to the contract after this worker was built: say what is known rather than nothing.
        None => format!("Order #{order} changed to status {}.", event.new_status),
    };
    if !event.detail.is_empty() {
        let _ = write!(text, " ({})", event.detail);
    }
    text
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

    fn event(new_status: OrderStatus, reason: TransitionReason) -> OrderStatusChanged {
        OrderStatusChanged {
            order_id: 42,
            new_status: new_status.into(),
            reason: reason.into(),
            items: vec![Item { sku: 1001, count: 2 }, Item { sku: 1002, count: 1 }],
            ..OrderStatusChanged::default()
        }
    }

    #[test]
    fn a_reserved_order_lists_its_items() {
        let text = render(&event(OrderStatus::AwaitingPayment, TransitionReason::Reserved));
        assert_eq!(text, "Order #42 is reserved and awaits payment: 2 × sku 1001, 1 × sku 1002.");
    }

    #[test]
    fn a_timeout_cancellation_says_why() {
        let text = render(&event(OrderStatus::Cancelled, TransitionReason::UnpaidTimeout));
        assert!(text.contains("not paid in time"), "{text}");
    }

    #[test]
    fn a_user_cancellation_is_not_called_a_timeout() {
        let text = render(&event(OrderStatus::Cancelled, TransitionReason::UserCancel));
        assert_eq!(text, "Order #42 was cancelled at your request.");
    }

    #[test]
    fn a_failed_order_carries_the_detail() {
        let mut failed = event(OrderStatus::Failed, TransitionReason::InsufficientStock);
        failed.detail = "sku 1001 is short".into();
        assert_eq!(render(&failed), "Order #42 could not be placed: there is not enough stock. (sku 1001 is short)");
    }
}
