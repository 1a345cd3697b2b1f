//! `ember-vmm`: one KVM microVM per process.

fn main() {
    eprintln!("ember-vmm: not built yet");
    std::process::exit(1);
}
