//! `cairn workflows`, `cairn nodes` and `cairn openapi`: what a node serves and who its peers are.

use super::{Plain, client, fail, show};
use crate::client::exit;

pub(in crate::cli) async fn workflows(args: Plain) -> u8 {
    let c = match client(&args.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    show(&args.remote, c.workflows().await, |list| {
        for w in list {
            println!("{}  input: {}", w.name, w.input_schema);
        }
    })
}

pub(in crate::cli) async fn nodes(args: Plain) -> u8 {
    let c = match client(&args.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    show(&args.remote, c.nodes().await, |list| {
        println!(
            "{:<24} {:<20} {:>11} {:>6} {:>7} {:>9}",
            "node", "roles", "concurrency", "busy", "queued", "executed"
        );
        for n in list.iter().filter(|n| n.joined) {
            println!(
                "{:<24} {:<20} {:>11} {:>6} {:>7} {:>9}",
                format!("{}{}", n.name, if n.local { " *" } else { "" }),
                n.roles.join(","),
                n.concurrency,
                n.busy,
                n.queued,
                n.executed
            );
        }
        for n in list.iter().filter(|n| !n.joined) {
            println!(
                "{:<24} not joined: {}",
                n.name,
                n.problem.as_deref().unwrap_or("not reachable yet")
            );
        }
    })
}

pub(in crate::cli) async fn openapi(args: Plain) -> u8 {
    let c = match client(&args.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.openapi().await {
        Ok(doc) => {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            exit::OK
        }
        Err(e) => fail(&e),
    }
}
