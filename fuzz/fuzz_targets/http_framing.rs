#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow::fuzzing::http_framing(data));
