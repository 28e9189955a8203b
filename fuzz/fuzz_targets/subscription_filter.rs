#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ably_tokend::fuzzing::subscription_filter(data));
