//! Rebuilds when a migration is added or changed: `sqlx::migrate!` embeds the files at compile time, and cargo
//! does not know they are inputs.

fn main() {
    println!("cargo:rerun-if-changed=../migrations/notifications");
}
