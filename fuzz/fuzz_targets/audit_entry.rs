#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drvault_repo::fuzz_targets::audit_entry(data));
