//! `ember`: the CLI (wired up in a later step).
fn main() {}
