//! `halab down`: remove everything a testbed made, whether its console is running, exited
//! or was killed.

use super::{CommandError, Context, load_topology};
use crate::testbed::down_by_name;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

pub async fn run(
    ctx: &Context,
    file: Option<&Path>,
    name: Option<String>,
) -> Result<ExitCode, CommandError> {
    let name = match (file, name) {
        (_, Some(n)) => n,
        (Some(f), None) => load_topology(f)?.name,
        (None, None) => {
            return Err(CommandError::Message(
                "give a topology file or --name".into(),
            ));
        }
    };
    if name.is_empty() || name.contains(['.', '/', '_']) {
        return Err(CommandError::Message(format!(
            "`{name}` is not a testbed name"
        )));
    }
    let t0 = Instant::now();
    let removed = down_by_name(&name, &ctx.state_dir).await?;
    if removed.is_empty() {
        println!("testbed {name}: nothing left to remove");
    } else {
        println!(
            "testbed {name}: removed {} namespaces with their links and processes in {:.2} s",
            removed.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
