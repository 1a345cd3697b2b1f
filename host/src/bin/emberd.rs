//! `emberd`: the host supervisor daemon (wired up in a later step).
fn main() {}
