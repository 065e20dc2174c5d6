//! A request body of one route (the first byte picks it), through the server's own parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentrack_server::fuzzing::request_body(input));
