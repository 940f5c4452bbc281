//! psfleet: the command-line tool.

fn main() {
    println!("psfleet {}", env!("CARGO_PKG_VERSION"));
}
