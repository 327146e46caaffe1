//! `serve_rules`: the bytes are a users file for [`UserTable::parse`] and, line by line (as
//! UTF-8, lossily), `--allow` rules for [`AllowRule::from_str`]. A rule that parses is
//! written back (`Display`) into text that parses to the same rule, and must allow the first
//! and last port of its range at its network address; every user a table holds checks with
//! the password of its line.

use std::net::SocketAddr;
use std::str::FromStr;

use erebus_server::{AllowList, AllowRule, UserTable};

/// The harness.
pub fn run(data: &[u8]) {
    users(data);
    let text = String::from_utf8_lossy(data);
    let mut rules = Vec::new();
    for line in text.lines().chain(core::iter::once(&*text)).take(64) {
        let Ok(rule) = AllowRule::from_str(line) else {
            continue;
        };
        let written = rule.to_string();
        let again = AllowRule::from_str(&written)
            .unwrap_or_else(|e| panic!("{line:?} parsed, its text {written:?} does not: {e}"));
        assert_eq!(again, rule, "{line:?} -> {written:?}");
        let addr = rule.net.addr();
        for port in [*rule.ports.start(), *rule.ports.end()] {
            assert!(rule.allows(SocketAddr::new(addr, port)), "{written} {port}");
        }
        rules.push(rule);
    }
    let list = AllowList::new(rules.clone());
    for rule in &rules {
        assert!(list.allows(SocketAddr::new(rule.net.addr(), *rule.ports.end())));
    }
}

fn users(data: &[u8]) {
    let Ok(table) = UserTable::parse(data) else {
        return;
    };
    let _ = format!("{table:?}");
    let text = core::str::from_utf8(data).expect("a table parsed from UTF-8");
    let mut count = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, password) = line
            .split_once(char::is_whitespace)
            .expect("a user line has white space");
        assert!(table.check(user, password.trim()), "user {user:?}");
        count += 1;
    }
    assert_eq!(table.len(), count);
    assert_eq!(table.is_empty(), count == 0);
}
