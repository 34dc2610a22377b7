//! Feeds arbitrary bytes to the replication CopyData parser, and the
//! XLogData payloads it yields on to the pgoutput decoder, as the stream
//! loop does.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgmigrate::protocol::pgoutput::{decode, DecodeContext, MAX_PROTOCOL_VERSION};
use pgmigrate::protocol::replication::ReplicationMessage;

fuzz_target!(|data: &[u8]| {
    match ReplicationMessage::parse(Bytes::copy_from_slice(data)) {
        Ok(ReplicationMessage::XLogData(x)) => {
            let _ = decode(x.data, DecodeContext::new(MAX_PROTOCOL_VERSION));
        }
        Ok(ReplicationMessage::PrimaryKeepalive(_)) => {}
        Err(e) => drop(e.to_string()),
    }
});
