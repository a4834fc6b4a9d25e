//! The test harness: fresh databases, servers started on free ports as a user would start them, generated
//! clients, and bounded polling. Test files live beside this folder, one folder per part of the system.

pub mod checkout;
pub mod db;
pub mod kafka;
pub mod loms;
pub mod notifications;
pub mod poll;
pub mod product;
pub mod proxy;

/// Asserts that `result` failed with `code` and that its message mentions `needle` (case-insensitive): every error
/// must say what went wrong in words a person can act on.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, needle: &str) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert!(
        status.message().to_lowercase().contains(&needle.to_lowercase()),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}
