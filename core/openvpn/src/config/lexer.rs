//! Splits a profile into directives the way OpenVPN 2.6 reads its configuration files.
//!
//! A line is cut into words by OpenVPN's own rules (`parse_line` in its `options.c`):
//!
//! - words are separated by white space;
//! - a word that *starts* with `#` or `;` starts a comment that runs to the end of the line
//!   (`foo#bar` is one word, `foo #bar` is a word and a comment);
//! - `"..."` quotes a word in which `\\`, `\"` and `\ ` are escapes;
//! - `'...'` quotes a word literally, with no escapes at all;
//! - outside single quotes a backslash may only escape `\`, `"` or white space, anything else
//!   is an error (OpenVPN's hint about Windows paths);
//! - a first word of three or more characters starting with `--` loses the dashes;
//! - a line whose only word is `<tag>` opens an inline block that runs, raw, up to the first
//!   line that starts with `</tag>` after optional white space.
//!
//! Line endings may be LF or CRLF and a UTF-8 byte order mark before the first line is
//! skipped. Inline block contents keep their bytes but get LF line endings, so that a PEM or
//! static key block reads the same whichever way the file was saved.

use zeroize::Zeroizing;

use super::ProfileError;

/// One directive: its words, or its tag and inline contents.
#[derive(Debug)]
pub(super) struct RawDirective {
    /// The 1-based line number of the directive (of the opening tag for a block).
    pub(super) line: usize,
    /// The directive's name, with any leading `--` removed.
    pub(super) name: String,
    /// The words after the name. Empty for an inline block.
    pub(super) args: Vec<String>,
    /// The contents of an inline block, when the directive was given as `<name>...</name>`.
    pub(super) inline: Option<InlineBlock>,
}

/// The raw contents of an inline `<tag>...</tag>` block.
pub(super) struct InlineBlock {
    /// The lines between the tags, each ended by LF. Zeroized on drop: most blocks are keys.
    pub(super) content: Zeroizing<Vec<u8>>,
    /// The 1-based line number of the first content line.
    pub(super) first_line: usize,
}

impl core::fmt::Debug for InlineBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "InlineBlock({} bytes from line {})",
            self.content.len(),
            self.first_line
        )
    }
}

/// The UTF-8 byte order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Splits `input` into lines without their LF or CRLF ending. `first_line` numbers the first.
fn lines(input: &[u8], first_line: usize) -> impl Iterator<Item = (usize, &[u8])> {
    // A trailing LF ends the last line rather than starting an empty one.
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    let empty = input.is_empty();
    body.split(|&b| b == b'\n')
        .filter(move |_| !empty)
        .enumerate()
        .map(move |(index, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (first_line + index, line)
        })
}

/// Reads every directive of `input`, whose first line has the number `first_line`.
pub(super) fn directives(
    input: &[u8],
    first_line: usize,
) -> Result<Vec<RawDirective>, ProfileError> {
    let input = input.strip_prefix(BOM).unwrap_or(input);
    let mut out = Vec::new();
    let mut lines = lines(input, first_line);
    while let Some((line_no, line)) = lines.next() {
        let mut words = split_words(line).map_err(|message| ProfileError {
            line: Some(line_no),
            directive: first_word_lossy(line),
            message,
        })?;
        if words.is_empty() {
            continue;
        }
        let mut name = words.remove(0);
        if name.len() >= 3 && name.starts_with("--") {
            name.drain(..2);
        }
        if let Some(tag) = name.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
            let tag = tag.to_owned();
            if let Some(closing) = tag.strip_prefix('/') {
                return Err(ProfileError::at(
                    line_no,
                    closing,
                    format!("</{closing}> closes an inline block that was never opened"),
                ));
            }
            if tag.is_empty() || !words.is_empty() {
                return Err(ProfileError::at(
                    line_no,
                    &name,
                    "an inline block's opening tag must be the only word on its line",
                ));
            }
            let close = format!("</{tag}>");
            let mut content = Zeroizing::new(Vec::new());
            let mut closed = false;
            for (_, inner) in lines.by_ref() {
                let trimmed = trim_start(inner);
                if trimmed.starts_with(close.as_bytes()) {
                    closed = true;
                    break;
                }
                content.extend_from_slice(inner);
                content.push(b'\n');
            }
            if !closed {
                return Err(ProfileError::at(
                    line_no,
                    &tag,
                    format!("the inline block <{tag}> is never closed by {close}"),
                ));
            }
            out.push(RawDirective {
                line: line_no,
                name: tag,
                args: Vec::new(),
                inline: Some(InlineBlock {
                    content,
                    first_line: line_no + 1,
                }),
            });
        } else {
            out.push(RawDirective {
                line: line_no,
                name,
                args: words,
                inline: None,
            });
        }
    }
    Ok(out)
}

/// OpenVPN's notion of white space (C `isspace`, plus the end of the string).
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0)
}

fn trim_start(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(line.len());
    line.get(start..).unwrap_or_default()
}

/// The first word of a line that failed to split, for the error report.
fn first_word_lossy(line: &[u8]) -> String {
    let trimmed = trim_start(line);
    let end = trimmed
        .iter()
        .position(|&b| is_space(b))
        .unwrap_or(trimmed.len());
    let word = String::from_utf8_lossy(trimmed.get(..end).unwrap_or_default()).into_owned();
    word.strip_prefix("--").map(str::to_owned).unwrap_or(word)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Between,
    Unquoted,
    DoubleQuoted,
    SingleQuoted,
}

/// Cuts one line into words, following OpenVPN's `parse_line` state machine.
pub(super) fn split_words(line: &[u8]) -> Result<Vec<String>, String> {
    // OpenVPN reads lines as C strings, so a NUL byte ends the line.
    let line = match line.iter().position(|&b| b == 0) {
        Some(end) => line.get(..end).unwrap_or_default(),
        None => line,
    };
    let mut words = Vec::new();
    // Sized for the whole line up front so that the word never reallocates: a word may be a
    // secret (an `auth-token`), and a reallocation would leave a copy behind in freed memory.
    let mut word: Vec<u8> = Vec::with_capacity(line.len());
    let mut state = State::Between;
    let mut backslash = false;
    for &byte in line.iter().chain(core::iter::once(&0u8)) {
        if !backslash && byte == b'\\' && state != State::SingleQuoted {
            backslash = true;
            continue;
        }
        let mut out = None;
        let mut done = false;
        match state {
            State::Between => {
                if !is_space(byte) {
                    if byte == b'#' || byte == b';' {
                        break;
                    }
                    if !backslash && byte == b'"' {
                        state = State::DoubleQuoted;
                    } else if !backslash && byte == b'\'' {
                        state = State::SingleQuoted;
                    } else {
                        out = Some(byte);
                        state = State::Unquoted;
                    }
                }
            }
            State::Unquoted => {
                if !backslash && is_space(byte) {
                    done = true;
                } else {
                    out = Some(byte);
                }
            }
            State::DoubleQuoted => {
                if !backslash && byte == b'"' {
                    done = true;
                } else {
                    out = Some(byte);
                }
            }
            State::SingleQuoted => {
                if byte == b'\'' {
                    done = true;
                } else {
                    out = Some(byte);
                }
            }
        }
        if done {
            words.push(into_string(&mut word)?);
            state = State::Between;
        }
        if backslash && let Some(escaped) = out {
            if escaped == 0 {
                return Err("the line ends with a backslash that escapes nothing".to_owned());
            }
            if !(escaped == b'\\' || escaped == b'"' || is_space(escaped)) {
                return Err(
                    "a backslash may only escape another backslash, a double quote or a \
                     space; write a Windows path with double backslashes"
                        .to_owned(),
                );
            }
        }
        backslash = false;
        if let Some(byte) = out
            && byte != 0
        {
            word.push(byte);
        }
    }
    match state {
        State::DoubleQuoted => Err("a double-quoted word has no closing quote".to_owned()),
        State::SingleQuoted => Err("a single-quoted word has no closing quote".to_owned()),
        State::Unquoted if backslash => {
            Err("the line ends with a backslash that escapes nothing".to_owned())
        }
        // A comment ended the line while a word was still open (impossible: a comment can only
        // start between words) or the line ended mid-word, which the NUL sentinel prevents.
        State::Unquoted => Err("the line ends in the middle of a word".to_owned()),
        State::Between => Ok(words),
    }
}

/// Moves the collected bytes of a word into a `String`, keeping its capacity for the next word.
fn into_string(word: &mut Vec<u8>) -> Result<String, String> {
    let text = core::str::from_utf8(word)
        .map_err(|_| "a word is not valid UTF-8".to_owned())?
        .to_owned();
    // The bytes may have been part of a secret: clear them before reusing the buffer.
    zeroize::Zeroize::zeroize(word);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line.as_bytes()).unwrap()
    }

    #[test]
    fn config_lexer_splits_on_white_space_and_comments() {
        assert_eq!(
            words("remote  vpn.example.com\t1194 udp"),
            ["remote", "vpn.example.com", "1194", "udp"]
        );
        assert_eq!(words("  # a comment"), Vec::<String>::new());
        assert_eq!(words("; another"), Vec::<String>::new());
        assert_eq!(words("verb 3 # trailing"), ["verb", "3"]);
        assert_eq!(words("verb 3 ;trailing"), ["verb", "3"]);
        // A comment character inside a word is an ordinary character.
        assert_eq!(words("setenv A b#c"), ["setenv", "A", "b#c"]);
    }

    #[test]
    fn config_lexer_quotes_and_escapes_like_openvpn() {
        assert_eq!(
            words(r#"static-challenge "Enter PIN" 1"#),
            ["static-challenge", "Enter PIN", "1"]
        );
        assert_eq!(
            words(r#"x "a \"quoted\" \\ word""#),
            ["x", r#"a "quoted" \ word"#]
        );
        assert_eq!(words(r"x 'C:\path\to file'"), ["x", r"C:\path\to file"]);
        assert_eq!(words(r"x a\ b"), ["x", "a b"]);
        assert_eq!(words(r"x C:\\dir\\f.key"), ["x", r"C:\dir\f.key"]);
        assert_eq!(words(r#"x """#), ["x", ""]);
        assert_eq!(words(r#"x "a"b"#), ["x", "a", "b"]);
        assert!(split_words(br"x C:\dir").is_err());
        assert!(split_words(br#"x "open"#).is_err());
        assert!(split_words(br"x 'open").is_err());
        assert!(split_words(br"x a\").is_err());
        assert!(split_words(b"x \xff").is_err());
        assert_eq!(split_words(b"verb 3\0junk\xff").unwrap(), ["verb", "3"]);
    }

    #[test]
    fn config_lexer_reads_inline_blocks_and_line_numbers() {
        let text = b"\xEF\xBB\xBFclient\r\n<ca>\r\nAAA\r\n  BBB\r\n  </ca>\r\n--verb 3\r\n";
        let ds = directives(text, 1).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!((ds[0].line, ds[0].name.as_str()), (1, "client"));
        assert_eq!((ds[1].line, ds[1].name.as_str()), (2, "ca"));
        let block = ds[1].inline.as_ref().unwrap();
        assert_eq!(&block.content[..], b"AAA\n  BBB\n");
        assert_eq!(block.first_line, 3);
        assert_eq!((ds[2].line, ds[2].name.as_str()), (6, "verb"));
        assert_eq!(ds[2].args, ["3"]);
    }

    #[test]
    fn config_lexer_rejects_unclosed_and_stray_tags() {
        let err = directives(b"client\n<key>\nabc\n", 1).unwrap_err();
        assert_eq!((err.line, err.directive.as_str()), (Some(2), "key"));
        let err = directives(b"client\n</key>\n", 1).unwrap_err();
        assert_eq!((err.line, err.directive.as_str()), (Some(2), "key"));
        let err = directives(b"<ca> extra\n</ca>\n", 1).unwrap_err();
        assert_eq!(err.line, Some(1));
    }
}
