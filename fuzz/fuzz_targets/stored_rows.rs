//! A stored execution row and the log after it, through the store's decoders and replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentrack_server::fuzzing::stored_rows(input));
