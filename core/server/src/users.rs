//! A plain file of usernames and passwords, for `erebus serve --users FILE`: one user per
//! line, the username, white space, then the password (the rest of the line). Blank lines and
//! lines starting with `#` are skipped.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Why a users file does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("users file line {line}: {reason}")]
pub struct UsersError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Usernames and their passwords.
#[derive(Clone, Default)]
pub struct UserTable {
    users: BTreeMap<String, Zeroizing<String>>,
}

impl core::fmt::Debug for UserTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UserTable")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl UserTable {
    /// Reads a users file.
    ///
    /// # Errors
    ///
    /// A line with a username but no password, a username given twice, or a file that is not
    /// UTF-8 (reported as line 0).
    pub fn parse(bytes: &[u8]) -> Result<Self, UsersError> {
        let text = core::str::from_utf8(bytes).map_err(|_| UsersError {
            line: 0,
            reason: "the file is not UTF-8 text",
        })?;
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, password)) = line.split_once(char::is_whitespace) else {
                return Err(UsersError {
                    line: line_no,
                    reason: "expected a username, white space and a password",
                });
            };
            let password = password.trim();
            if password.is_empty() {
                return Err(UsersError {
                    line: line_no,
                    reason: "the password is empty",
                });
            }
            if users
                .insert(user.to_owned(), Zeroizing::new(password.to_owned()))
                .is_some()
            {
                return Err(UsersError {
                    line: line_no,
                    reason: "this username appears twice",
                });
            }
        }
        Ok(Self { users })
    }

    /// One user.
    pub fn with_user(mut self, username: &str, password: &str) -> Self {
        self.users
            .insert(username.to_owned(), Zeroizing::new(password.to_owned()));
        self
    }

    /// Whether `username` exists with `password` (compared in constant time).
    pub fn check(&self, username: &str, password: &str) -> bool {
        self.users
            .get(username)
            .is_some_and(|known| bool::from(known.as_bytes().ct_eq(password.as_bytes())))
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_read_and_checked() {
        let table =
            UserTable::parse(b"# demo users\nalice  s3cret words \n\nbob hunter2\n").unwrap();
        assert_eq!(table.len(), 2);
        assert!(table.check("alice", "s3cret words"));
        assert!(table.check("bob", "hunter2"));
        assert!(!table.check("bob", "hunter3"));
        assert!(!table.check("carol", "hunter2"));
        assert!(!table.check("alice", ""));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(UserTable::parse(b"alice\n").unwrap_err().line, 1);
        assert_eq!(UserTable::parse(b"a x\nb  \n").unwrap_err().line, 2);
        let twice = UserTable::parse(b"a x\na y\n").unwrap_err();
        assert_eq!(
            (twice.line, twice.reason),
            (2, "this username appears twice")
        );
        assert_eq!(UserTable::parse(&[0xff]).unwrap_err().line, 0);
    }
}
