//! The one mapping from [`Error`] to a gRPC status. User errors never become INTERNAL; a dependency that is down is
//! UNAVAILABLE and named.

use tonic::Status;

use crate::error::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidInput(_) => Status::invalid_argument(error.to_string()),
            Error::ProductNotFound(_) => Status::not_found(error.to_string()),
            // The caller must change the cart (or wait for stock) before the same call can succeed. A total beyond
            // uint32 is treated alike: the cart's state, not the request, is what the caller has to fix.
            Error::InsufficientStock { .. }
            | Error::CartLineFull { .. }
            | Error::CartFull { .. }
            | Error::AlreadyPurchased { .. }
            | Error::Refused { .. }
            | Error::EmptyCart
            | Error::ReservationFailed(_)
            | Error::TotalPriceOverflow(_) => Status::failed_precondition(error.to_string()),
            Error::Unavailable { .. } => Status::unavailable(error.to_string()),
            Error::DeadlineExceeded { .. } => Status::deadline_exceeded(error.to_string()),
            Error::Internal(source) => {
                tracing::error!(error = %source, debug = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::{
        domain::{InvalidInput, Sku, TotalPriceOverflow},
        error::Dependency,
    };

    #[test]
    fn each_error_has_the_documented_code() {
        let sku = Sku::try_from(7u32).unwrap();
        let cases = [
            (Error::InvalidInput(InvalidInput("bad".into())), Code::InvalidArgument),
            (Error::ProductNotFound(sku), Code::NotFound),
            (Error::InsufficientStock { sku, requested: 3, available: 2 }, Code::FailedPrecondition),
            (Error::CartLineFull { sku, requested: 70_000 }, Code::FailedPrecondition),
            (Error::CartFull { sku }, Code::FailedPrecondition),
            (
                Error::AlreadyPurchased {
                    order_id: crate::domain::OrderId::try_from(3).unwrap(),
                    status: "payed",
                    emptied: true,
                },
                Code::FailedPrecondition,
            ),
            (Error::Refused { dependency: Dependency::Loms, message: "no".into() }, Code::FailedPrecondition),
            (Error::EmptyCart, Code::FailedPrecondition),
            (Error::ReservationFailed("short".into()), Code::FailedPrecondition),
            (Error::TotalPriceOverflow(TotalPriceOverflow), Code::FailedPrecondition),
            (Error::Unavailable { dependency: Dependency::Loms, detail: "down".into() }, Code::Unavailable),
            (Error::DeadlineExceeded { dependency: Dependency::ProductService }, Code::DeadlineExceeded),
            (Error::internal(std::io::Error::other("bug")), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn an_unavailable_dependency_is_named() {
        let status = Status::from(Error::Unavailable { dependency: Dependency::Loms, detail: "refused".into() });
        assert!(status.message().starts_with("LOMS is unavailable"), "{}", status.message());
    }
}
