pub fn report(e: &anyhow::Error) -> i32 {
    eprintln!("error: {e:#}");
    1
}
