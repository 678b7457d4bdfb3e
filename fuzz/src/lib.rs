//! The libFuzzer entry point for the targets in `fuzz_targets/`, without libfuzzer-sys: that
//! crate's build script needs `cc` with its `parallel` feature, and the feature would spread
//! to every build script using `cc` (ring's among them), so nothing compiled for the
//! workspace's own dev build could be reused. libFuzzer itself is a prebuilt `libFuzzer.a`
//! (LLVM's, see build.rs); it provides `main` and calls `LLVMFuzzerTestOneInput` once per
//! input.

/// Defines `LLVMFuzzerTestOneInput` running `$body` with the input bytes as `$data`. A panic
/// aborts the process, which libFuzzer reports as a crash and saves the input of.
#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident: &[u8]| $body:block) => {
        /// # Safety
        /// libFuzzer passes a readable buffer of `len` bytes (or a dangling pointer and 0).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn LLVMFuzzerTestOneInput(ptr: *const u8, len: usize) -> i32 {
            let $data: &[u8] = if len == 0 {
                &[]
            } else {
                // SAFETY: see above.
                unsafe { ::std::slice::from_raw_parts(ptr, len) }
            };
            if ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(move || $body)).is_err() {
                ::std::process::abort();
            }
            0
        }
    };
}
