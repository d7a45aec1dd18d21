//! The `blocknode` binary: see the library for its parts.

fn main() {
    eprintln!("blocknode: not built yet");
    std::process::exit(2);
}
