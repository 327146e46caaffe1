//! Deliberate violations of the sans-IO rules; see Cargo.toml.
#![allow(dead_code)]

fn reads_the_clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn reads_wall_time() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

fn sleeps() {
    std::thread::sleep(std::time::Duration::from_millis(1));
}

fn spawns() {
    std::thread::spawn(|| ());
}

fn opens_a_socket() -> std::io::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind("127.0.0.1:0")
}

fn connects() -> std::io::Result<std::net::TcpStream> {
    std::net::TcpStream::connect("127.0.0.1:1")
}

fn reads_a_file() -> std::io::Result<Vec<u8>> {
    std::fs::read("profile.ovpn")
}

fn iterates_a_hash_map(map: &std::collections::HashMap<u32, u32>) -> u32 {
    map.values().sum()
}
