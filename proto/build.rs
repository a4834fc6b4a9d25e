//! Compiles every contract in this folder into Rust with one protoc run, keeps the descriptor set for gRPC
//! reflection, and generates proto3-JSON (serde) impls for the event messages.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "loms/v1/loms.proto",
    "loms/v1/admin.proto",
    "checkout/v1/checkout.proto",
    "route256/product/product.proto",
    "events/v1/order_events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("minizon_descriptor.bin");

    // protoc comes from a crate, so a clean clone builds with nothing installed but cargo.
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // Well-known types come from pbjson-types, which carries their canonical JSON forms (RFC 3339 times).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .emit_rerun_if_changed(false)
        .compile_with_config(config, PROTOS, &["."])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        // Events carry every field, defaults included (`"newStatus": "ORDER_STATUS_NEW"`), so a person reading
        // the topic with kcat sees the whole transition; parsers accept both forms.
        .emit_fields()
        .build(&[".loms_v1", ".minizon.events.v1"])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
