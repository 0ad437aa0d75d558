#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrovirt_fuzz_targets::protobuf(data));
