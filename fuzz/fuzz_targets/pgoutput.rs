//! Feeds arbitrary bytes to the pgoutput decoder under every context a
//! stream can be in: it must return, never panic, and whatever it accepts
//! must be walkable to the end.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgmigrate::protocol::pgoutput::{
    decode, DecodeContext, OldTuple, PgOutputMessage, TupleData, MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
};

fn walk(tuple: &TupleData) {
    assert_eq!(tuple.iter().count(), tuple.len());
}

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    for protocol_version in MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION {
        for in_streamed_txn in [false, true] {
            for parallel_streaming in [false, true] {
                let ctx = DecodeContext {
                    protocol_version,
                    in_streamed_txn,
                    parallel_streaming,
                };
                match decode(buf.clone(), ctx) {
                    Ok(PgOutputMessage::Insert(m)) => walk(&m.new_tuple),
                    Ok(PgOutputMessage::Update(m)) => {
                        walk(&m.new_tuple);
                        if let Some(old) = &m.old_tuple {
                            walk(old.tuple());
                        }
                    }
                    Ok(PgOutputMessage::Delete(m)) => match &m.old_tuple {
                        OldTuple::Key(t) | OldTuple::Full(t) => walk(t),
                    },
                    Ok(_) => {}
                    // Formatting the error exercises every Display arm.
                    Err(e) => drop(e.to_string()),
                }
            }
        }
    }
});
