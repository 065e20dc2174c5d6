//! The size of a value as compact JSON, counted without writing the text anywhere: what the
//! request limits (`api/body.rs`) and the row's history budget (`store/row.rs`) measure.

/// The size of `value` written as compact JSON, in bytes.
pub fn json_size(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail; a value that cannot be serialised at all fails later,
    // where it is encoded for real.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
