//! One module per command.
pub mod spec;
pub mod store;

pub struct Context;
impl Context {
    pub fn new(_g: &crate::GlobalArgs) -> anyhow::Result<Self> {
        Ok(Context)
    }
}
