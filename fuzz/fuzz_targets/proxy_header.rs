#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow::fuzzing::proxy_header(data));
