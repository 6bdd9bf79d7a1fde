//! Generated protobuf and gRPC code for the revokd wire contract (`proto/revokd/v1`).
//!
//! This crate holds the generated code and what every side of the wire shares: the metadata
//! keys, error marker and field bounds ([`wire`]), every conversion between the messages and
//! the domain types of `revokd-core` ([`convert`]), the codec, how channels dial ([`dial`])
//! and the wall clock ([`clock`]). Nothing else converts between the two.

pub mod clock;
pub mod codec;
pub mod convert;
pub mod dial;
pub mod wire;

/// `revokd.v1`: the public revocation and cluster API plus the internal Raft transport.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    tonic::include_proto!("revokd.v1");
}

/// Encoded `FileDescriptorSet` of every revokd service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("revokd_descriptor");
