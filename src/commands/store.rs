#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    Stats,
}
pub fn run(_ctx: &super::Context, _cmd: StoreCommand) -> anyhow::Result<i32> {
    Ok(0)
}
