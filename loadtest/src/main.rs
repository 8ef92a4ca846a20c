//! `agenttier-loadtest`: parse the arguments, run the scenarios, print the
//! table. Everything else is in the library.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = agenttier_loadtest::Args::parse();
    let report = agenttier_loadtest::run(args).await?;
    print!("{}", report.table());
    Ok(())
}
