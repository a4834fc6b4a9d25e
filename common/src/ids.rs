//! The shop's identifiers and quantities, shared by LOMS and Checkout, valid by construction: each service's gRPC
//! boundary parses into these, and nothing past it checks again.

use std::fmt;

/// Why a value was refused at the boundary; becomes INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            /// The raw value (always positive).
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = InvalidInput;

            fn try_from(value: i64) -> Result<Self, Self::Error> {
                if value > 0 {
                    Ok(Self(value))
                } else {
                    Err(InvalidInput(format!(concat!($field, " must be a positive number, got {}"), value)))
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// A user of the shop.
    UserId, "user"
);
positive_id!(
    /// An order, as numbered by LOMS.
    OrderId, "order_id"
);
positive_id!(
    /// A warehouse holding stock.
    WarehouseId, "warehouse_id"
);

/// A stock-keeping unit (product). Zero is not a sku.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(u32);

impl Sku {
    /// The raw value (never zero).
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Sku {
    type Error = InvalidInput;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        if value == 0 { Err(InvalidInput("sku must not be 0".into())) } else { Ok(Self(value)) }
    }
}

impl TryFrom<i64> for Sku {
    type Error = InvalidInput;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        u32::try_from(value).map_err(|_| InvalidInput(format!("sku {value} is out of range")))?.try_into()
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Units of one sku: 1 to 65,535 (the contract's count is a uint16 on the original service). A request's count, an
/// order line and a whole cart line are each limited to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Count(u16);

impl Count {
    /// The largest count a request or a line may carry.
    pub const MAX: u32 = u16::MAX as u32;

    /// The raw value (1..=65535).
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl TryFrom<u32> for Count {
    type Error = InvalidInput;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        match u16::try_from(value) {
            Ok(0) => Err(InvalidInput("count must be at least 1".into())),
            Ok(count) => Ok(Self(count)),
            Err(_) => Err(InvalidInput(format!("count must be at most {}, got {value}", Self::MAX))),
        }
    }
}

impl TryFrom<i64> for Count {
    type Error = InvalidInput;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        u32::try_from(value).map_err(|_| InvalidInput(format!("count {value} is out of range")))?.try_into()
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive() {
        assert!(UserId::try_from(0).is_err());
        assert!(OrderId::try_from(-5).is_err());
        assert_eq!(UserId::try_from(7).unwrap().get(), 7);
    }

    #[test]
    fn count_is_limited_to_the_uint16_range() {
        assert!(Count::try_from(0u32).is_err());
        assert!(Count::try_from(65_536u32).is_err());
        assert_eq!(Count::try_from(65_535u32).unwrap().get(), 65_535);
    }

    #[test]
    fn sku_zero_and_out_of_range_skus_are_refused() {
        assert!(Sku::try_from(0u32).is_err());
        assert!(Sku::try_from(-1i64).is_err());
        assert!(Sku::try_from(i64::from(u32::MAX) + 1).is_err());
    }
}
