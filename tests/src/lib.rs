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
