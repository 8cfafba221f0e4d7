//! Generates the gRPC code from `proto/nuage/v1` when the daemon is built, with a vendored
//! `protoc` so a plain `cargo build` needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "daemon")]
    {
        let protos = [
            "proto/nuage/v1/images.proto",
            "proto/nuage/v1/instances.proto",
            "proto/nuage/v1/subnets.proto",
            "proto/nuage/v1/volumes.proto",
            "proto/nuage/v1/addresses.proto",
            "proto/nuage/v1/keypairs.proto",
            "proto/nuage/v1/securitygroups.proto",
            "proto/nuage/v1/resources.proto",
            "proto/nuage/v1/elbv2.proto",
            "proto/nuage/v1/launchtemplates.proto",
            "proto/nuage/v1/autoscaling.proto",
            "proto/nuage/v1/elasticbeanstalk.proto",
        ];
        for proto in protos {
            println!("cargo:rerun-if-changed={proto}");
        }
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
        // The encoded descriptors feed the reflection service.
        let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("nuage_descriptor.bin");
        tonic_build::configure()
            .file_descriptor_set_path(descriptors)
            .type_attribute(".nuage.v1", "#[derive(serde::Serialize)]")
            .compile_protos(&protos, &["proto"])?;
    }
    Ok(())
}
